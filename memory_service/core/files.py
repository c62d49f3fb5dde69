"""Files the service writes for other processes to read."""

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: written to a fresh sibling file, flushed to disk, then
    renamed over it, so a reader sees the old file or the whole new one, never half of it,
    and two writers never share a temporary file (the last rename wins)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, 0o644)  # as open() made it: mkstemp creates files only the owner reads
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
