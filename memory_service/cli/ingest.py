"""`memory-service ingest PATH... --namespace NS`: files, folders or `-` (stdin) in.

Shows a progress bar (files, chunks, chunks/s, ETA over files), prints a summary, and exits
1 when any document failed, listing each failure; 0 otherwise. Ends with one pass of the
index lifecycle, so a first bulk load builds its vector index once, from all its rows.
"""

import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from memory_service.bootstrap import open_resources
from memory_service.core.errors import StartupError
from memory_service.core.settings import Settings
from memory_service.documents import loaders
from memory_service.documents.loaders import LoadedDocument, LoaderError
from memory_service.documents.pipeline import IngestReport


async def ingest(
    settings: Settings,
    environ: Mapping[str, str],
    paths: Sequence[str],
    namespace: str,
    *,
    prune: bool = False,
    stdin_format: str = "txt",
    out: TextIO = sys.stderr,
) -> int:
    async with open_resources(settings, environ=environ, serving=False) as resources:
        ingestor = resources.documents
        if ingestor is None:
            raise StartupError(f"cannot ingest: {resources.documents_unavailable}")
        files = sum(_count_files(path) for path in paths)
        seen: set[str] = set()
        with tqdm(total=files, unit="file", file=out, dynamic_ncols=True) as bar:
            last_file: list[str] = []

            def progress(report: IngestReport) -> None:
                bar.set_postfix(
                    chunks=report.chunks, chunks_per_s=f"{report.chunks_per_second:.0f}"
                )

            def tracked() -> Iterator[LoadedDocument | LoaderError]:
                for item in _documents(paths, stdin_format):
                    source = item.source_uri
                    seen.add(source)
                    file = source.split("#", 1)[0]
                    if last_file and last_file[0] != file:
                        bar.update(1)
                    last_file[:] = [file]
                    yield item
                if last_file:
                    bar.update(1)

            report = await ingestor.ingest(tracked(), namespace, progress)
        if prune:
            report.pruned = await ingestor.prune(namespace, _folder_uris(paths), seen)
        # The fastest load: COPY into a table without an index, then build it once, here,
        # rather than at `serve`'s next pass (a no-op below MEMORY_ANN_MIN_ROWS).
        built = await resources.indexes.maintain()
    _summary(report, out)
    for table, outcome in built.items():
        if outcome in ("built", "rebuilt", "failed"):
            print(f"vector index of {table}: {outcome}", file=out)
    return 1 if report.failed else 0


def _documents(paths: Sequence[str], stdin_format: str) -> Iterator[LoadedDocument | LoaderError]:
    for path in paths:
        if path == "-":
            yield from loaders.iter_stream(sys.stdin, stdin_format)
        else:
            yield from loaders.iter_documents([Path(path)])


def _folder_uris(paths: Sequence[str]) -> list[str]:
    """The URI prefix of each folder among `paths`: what `--prune` may delete under."""
    return [Path(path).resolve().as_uri() + "/" for path in paths if Path(path).is_dir()]


def _count_files(path: str) -> int:
    if path == "-":
        return 1
    return sum(1 for _ in loaders.iter_files(Path(path)))


def _summary(report: IngestReport, out: TextIO) -> None:
    print(
        f"{report.documents} documents: {report.ingested} ingested, {report.unchanged} unchanged, "
        f"{len(report.failed)} failed; {report.chunks} chunks in {report.seconds:.1f} s "
        f"({report.chunks_per_second:.0f} chunks/s)",
        file=out,
    )
    for source in report.pruned:
        print(f"pruned {source}", file=out)
    for source, error in report.failed:
        print(f"FAILED {source}: {error}", file=out)
