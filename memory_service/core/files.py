"""Files the service writes for other processes to read."""

import os
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: written to a sibling, flushed to disk, then renamed over
    it, so a reader sees the old file, no file, or the whole new one, never half of it."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
