"""Files the service writes for other processes to read."""

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text`: written to a fresh sibling file, flushed to disk, then
    renamed over it, so a reader sees the old file or the whole new one, never half of it,
    and two writers never share a temporary file (the last rename wins). `mode` is the
    file's permissions (0o600 for a secret)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, mode)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
