"""Loaders: files, folders and streams become `LoadedDocument`s, the pipeline's input.

Formats, chosen by suffix (case-insensitive) or named for a stream: `.txt`, `.md`,
`.html`/`.htm`, `.jsonl` (one document per line).

Contracts:
- Input is UTF-8 (a leading BOM is ignored). Anything else is a `LoaderError`, never a
  lossy decode. Newlines become "\\n"; txt and md text is otherwise kept verbatim.
- `source_uri` identifies a document across runs, so re-ingestion replaces rather than
  duplicates: `path.resolve().as_uri()` for a file, plus `#<id>` (percent-encoded) or
  `#<line number>` for a jsonl record. A stream's documents use the caller's `name`
  verbatim (pass a URI when there is one), plus the same fragment for jsonl.
- Titles: a jsonl record's `title` (or None). md: the first `# ` heading outside code
  fences; html: `<title>`, else the first `<h1>`; failing those, and for txt, the file's
  stem (None for a stream).
- Metadata: a jsonl record's fields other than text/title/id, merged with its `metadata`
  object (whose keys win). Files and streams get `{}`; the pipeline knows the suffix.
- Empty documents (whitespace only) are yielded, not skipped: a file that became empty
  must still reach the pipeline so that its old chunks are retired.
- Two layers: `iter_documents` / `iter_stream` yield a `LoaderError` for each failure and go
  on (other files, other jsonl lines); `load_path` / `load_stream` raise the first one.
- Folder walks recurse in name order (deterministic), follow symlinks but visit each
  directory and each file once (loops are safe), skip hidden entries (names starting with
  "."), and ignore files with other suffixes. A file named explicitly must have a supported
  suffix.
- Only regular files are read. A FIFO, device or socket with a supported name is an error
  for that entry, never opened (a FIFO would block the reader forever); the file is opened
  non-blocking and checked again, so one swapped in after the walk is refused too. With
  `max_file_bytes`, a larger file is an error for that file, and no more than that is read.
"""

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from pydantic import JsonValue

from memory_service.documents.html import html_to_text

FORMATS = ("txt", "md", "html", "jsonl")
SUFFIX_FORMATS = {".txt": "txt", ".md": "md", ".html": "html", ".htm": "html", ".jsonl": "jsonl"}


@dataclass(frozen=True)
class LoadedDocument:
    source_uri: str
    title: str | None
    text: str
    metadata: dict[str, JsonValue]


class LoaderError(Exception):
    """A source (or one jsonl line of it, then `line` is 1-based) that could not be loaded."""

    def __init__(self, source_uri: str, message: str, line: int | None = None) -> None:
        super().__init__(f"{source_uri}: {message}")
        self.source_uri = source_uri
        self.message = message
        self.line = line


LoadResult = LoadedDocument | LoaderError


def load_path(path: Path) -> Iterator[LoadedDocument]:
    """The documents of one file or folder; raises the first `LoaderError` met."""
    return _raising(iter_documents([path]))


def load_stream(stream: TextIO, fmt: str, name: str = "stdin") -> Iterator[LoadedDocument]:
    """The documents read from a text stream; raises the first `LoaderError` met."""
    return _raising(iter_stream(stream, fmt, name))


def iter_documents(
    paths: Iterable[Path],
    refuse: Callable[[Path], str | None] | None = None,
    max_file_bytes: int | None = None,
) -> Iterator[LoadResult]:
    """Documents and per-source errors of files and folders, in order; never raises a
    `LoaderError`. A file reached twice (named twice, or through a symlink) is read once.
    `refuse(resolved file)` may name a reason not to read a file (it becomes an error), and
    a file over `max_file_bytes` is one too."""
    for item in _unique_files(paths):
        if isinstance(item, LoaderError):
            yield item
        elif refuse is not None and (reason := refuse(item[0])) is not None:
            yield LoaderError(item[0].as_uri(), reason)
        else:
            yield from _load_file(*item, max_file_bytes)


def iter_files(path: Path) -> Iterator[Path]:
    """The files, resolved, that `load_path(path)` reads, in its order (for progress
    totals); what cannot be listed or read is left to `iter_documents` to report."""
    for item in _unique_files([path]):
        if not isinstance(item, LoaderError):
            yield item[0]


def iter_stream(stream: TextIO, fmt: str, name: str = "stdin") -> Iterator[LoadResult]:
    """Documents and errors of a stream in format `fmt`, one of `FORMATS` (else ValueError,
    raised by this call rather than on iteration)."""
    if fmt not in FORMATS:
        raise ValueError(f"unsupported format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _stream_items(stream, fmt, name)


def _stream_items(stream: TextIO, fmt: str, name: str) -> Iterator[LoadResult]:
    if fmt == "jsonl":
        yield from _jsonl_items(_stream_lines(stream, name), name)
        return
    try:
        text = stream.read()
    except UnicodeDecodeError as exc:
        yield LoaderError(name, f"not valid UTF-8: {exc.reason} at byte {exc.start}")
        return
    yield _document(name, fmt, _normalize(text.removeprefix("\ufeff")), fallback_title=None)


def _raising(items: Iterator[LoadResult]) -> Iterator[LoadedDocument]:
    for item in items:
        if isinstance(item, LoaderError):
            raise item
        yield item


def _unique_files(paths: Iterable[Path]) -> Iterator[tuple[Path, str] | LoaderError]:
    """(resolved file, format) for each supported file of the paths, each file once, and an
    error for each path that is missing, unsupported or cannot be listed."""
    seen_files: set[Path] = set()
    seen_dirs: set[tuple[int, int]] = set()
    for path in paths:
        for item in _candidate_files(path, seen_dirs):
            if isinstance(item, LoaderError):
                yield item
            elif (resolved := item[0].resolve()) not in seen_files:
                seen_files.add(resolved)
                yield resolved, item[1]


def _candidate_files(
    path: Path, seen_dirs: set[tuple[int, int]]
) -> Iterator[tuple[Path, str] | LoaderError]:
    if path.is_dir():
        yield from _walk(path, seen_dirs)
        return
    uri = path.resolve().as_uri()
    if not path.exists():
        yield LoaderError(uri, "no such file or directory")
    elif (fmt := SUFFIX_FORMATS.get(path.suffix.lower())) is None:
        supported = ", ".join(SUFFIX_FORMATS)
        yield LoaderError(uri, f"unsupported file type {path.suffix!r}; expected {supported}")
    else:
        yield path, fmt


def _walk(
    directory: Path, seen_dirs: set[tuple[int, int]]
) -> Iterator[tuple[Path, str] | LoaderError]:
    """Supported files under `directory` in name order, each directory visited once."""
    try:
        status = directory.stat()
        if (status.st_dev, status.st_ino) in seen_dirs:
            return
        seen_dirs.add((status.st_dev, status.st_ino))
        entries = sorted(directory.iterdir(), key=lambda entry: entry.name)
    except OSError as exc:
        yield LoaderError(directory.resolve().as_uri(), f"cannot list folder: {exc.strerror}")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError as exc:  # e.g. a folder we may list but not search
            yield LoaderError(entry.absolute().as_uri(), f"cannot read: {exc.strerror}")
            continue
        if is_dir:
            yield from _walk(entry, seen_dirs)
        elif (fmt := SUFFIX_FORMATS.get(entry.suffix.lower())) is not None:
            yield entry, fmt


def _load_file(path: Path, fmt: str, max_file_bytes: int | None) -> Iterator[LoadResult]:
    uri = path.as_uri()
    try:
        data = read_regular_file(path, max_file_bytes)
    except LoaderError as exc:
        yield exc
        return
    if fmt == "jsonl":
        yield from _jsonl_items(_byte_lines(data, uri), uri)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield LoaderError(uri, f"not valid UTF-8: {exc.reason} at byte {exc.start}")
        return
    yield _document(uri, fmt, _normalize(text), fallback_title=path.stem)


def read_regular_file(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of `path`, a regular file of at most `max_bytes`; LoaderError otherwise.
    Opened with O_NONBLOCK, so opening a FIFO returns at once rather than wait for a writer,
    and the open file is what is checked (no race with a swap after the walk)."""
    uri = path.as_uri()
    try:
        kind = _special_kind(path.stat().st_mode)
        if kind is not None:
            raise LoaderError(uri, f"not a regular file (a {kind}); skipped")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise LoaderError(uri, f"cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        kind = _special_kind(status.st_mode)
        if kind is not None:
            raise LoaderError(uri, f"not a regular file (a {kind}); skipped")
        if max_bytes is not None and status.st_size > max_bytes:
            raise LoaderError(uri, f"{status.st_size} bytes, at most {max_bytes}; skipped")
        try:
            data = file.read() if max_bytes is None else file.read(max_bytes + 1)
        except OSError as exc:
            raise LoaderError(uri, f"cannot read: {exc.strerror}") from None
    if max_bytes is not None and len(data) > max_bytes:  # it grew while being read
        raise LoaderError(uri, f"over {max_bytes} bytes; skipped")
    return data


def _special_kind(mode: int) -> str | None:
    """What a file that is not a regular file is, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _document(uri: str, fmt: str, text: str, fallback_title: str | None) -> LoadedDocument:
    title: str | None
    if fmt == "html":
        text, title = html_to_text(text)
    elif fmt == "md":
        title = markdown_title(text)
    else:
        title = None
    return LoadedDocument(uri, title or fallback_title, text, {})


def _normalize(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


_ATX_TITLE = re.compile(r"# +(.*?)(?: +#+)? *")
_FENCE = re.compile(r" {0,3}(?:```|~~~)")


def markdown_title(text: str) -> str | None:
    """The text of the first level-1 ATX heading (`# Title`) outside fenced code, if any."""
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := _ATX_TITLE.fullmatch(line.rstrip())) and match[1]:
            return match[1]
    return None


def _byte_lines(data: bytes, uri: str) -> Iterator[tuple[int, str | LoaderError]]:
    """Numbered lines of a file, decoded one by one so that bad bytes name their line."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        chunk = raw.removesuffix(b"\r")
        if number == 1:
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        try:
            yield number, chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = f"line {number}: not valid UTF-8: {exc.reason} at byte {exc.start}"
            yield number, LoaderError(uri, message, line=number)


def _stream_lines(stream: TextIO, name: str) -> Iterator[tuple[int, str | LoaderError]]:
    """Numbered lines of a stream; a decode failure ends it (the stream cannot resync)."""
    number = 0
    while True:
        try:
            line = stream.readline()
        except UnicodeDecodeError as exc:
            message = f"not valid UTF-8 after line {number}: {exc.reason}"
            yield number + 1, LoaderError(name, message, line=number + 1)
            return
        if not line:
            return
        number += 1
        yield number, (line.removeprefix("\ufeff") if number == 1 else line)


def _jsonl_items(lines: Iterator[tuple[int, str | LoaderError]], uri: str) -> Iterator[LoadResult]:
    """One document per non-blank line; a bad line is an error and the next line goes on."""
    fragments: set[str] = set()
    for number, line in lines:
        if isinstance(line, LoaderError):
            yield line
        elif line.strip():
            try:
                yield _jsonl_record(line, number, uri, fragments)
            except _RecordError as exc:
                yield LoaderError(uri, f"line {number}: {exc}", line=number)


class _RecordError(Exception):
    pass


def _reject_constant(name: str) -> None:
    raise _RecordError(f"{name} is not valid JSON")


def _jsonl_record(line: str, number: int, uri: str, fragments: set[str]) -> LoadedDocument:
    try:
        record = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _RecordError(f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(record, dict):
        raise _RecordError(f"expected a JSON object, got {type(record).__name__}")
    text_key = "text" if "text" in record else "content" if "content" in record else None
    if text_key is None:
        raise _RecordError('missing "text" (or "content") field')
    text = record.pop(text_key)
    if not isinstance(text, str):
        raise _RecordError(f'"{text_key}" must be a string')
    title = record.pop("title", None)
    if title is not None and not isinstance(title, str):
        raise _RecordError('"title" must be a string')
    fragment = _fragment(record.pop("id", None), number)
    if fragment in fragments:
        raise _RecordError(f"duplicate document id #{fragment} in this file")
    fragments.add(fragment)
    explicit = record.pop("metadata", {})
    if not isinstance(explicit, dict):
        raise _RecordError('"metadata" must be a JSON object')
    metadata: dict[str, JsonValue] = {**record, **explicit}
    return LoadedDocument(f"{uri}#{fragment}", title, _normalize(text), metadata)


def _fragment(record_id: object, number: int) -> str:
    if record_id is None:
        return str(number)
    if isinstance(record_id, bool) or not isinstance(record_id, str | int) or record_id == "":
        raise _RecordError('"id" must be a non-empty string or an integer')
    return quote(str(record_id), safe="")
