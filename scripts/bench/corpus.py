"""The benchmark corpus: real English sentences from Debian's documentation packages, embedded
by the bundled model (all-MiniLM-L6-v2, 384-dim) and cached outside the repository.

Why real text: ANN recall depends on how vectors cluster, and random vectors (nearly
equidistant in 384 dimensions) say nothing about the embeddings the service stores.

Sources (install them first, as root):

    apt-get update && apt-get install -y python3.11-doc postgresql-doc-15 python-django-doc

Their HTML pages (Sphinx's `_modules` source listings excepted) are read in a fixed order;
the text outside <pre>, <script>, <style> and <head> is split into sentences at `.`, `!` or
`?` followed by a capital, and a sentence is kept when it has 5..60 words, ends a sentence,
is mostly letters, and fits the model's 256-token window (the service refuses longer texts,
it never truncates). Repeats are dropped (first occurrence wins), then the whole list is
shuffled with a fixed seed, so any prefix is a fair sample of all three manuals.

The cache lives in `~/.cache/memory-service-bench/<corpus>/` (`--cache-dir` moves it):

    texts.txt           one sentence per line, in corpus order
    corpus.json         the sources and their package versions, count, sha256 of texts.txt
    vectors/00000.npy   float32 [chunk, 384]: the vectors of texts[0:chunk], and so on

The first `QUERY_POOL` sentences are held out as queries; rows come after them, so a
benchmark that loads N rows never loads a query. Embedding is resumable: a chunk file
appears whole (written under a temporary name, then renamed), so a rerun after an interrupt
continues at the first missing chunk; `--limit` embeds only a prefix. Delete the folder, or
pass `--rebuild`, to regenerate from the installed packages.

Growing to 1M rows is a new corpus name with more sources (e.g. python-pandas-doc,
python-scipy-doc, rust-doc), embedded the same way in the background: readers load only the
chunks a prefix needs (memory-mapped), so a large cache costs nothing to a small run.

Run from the repository root:

    .venv/bin/python -m scripts.bench.corpus [--limit N] [--threads 2]
"""

import argparse
import asyncio
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from memory_service.providers.embedding import Vectors
from memory_service.providers.local import BUNDLED_MODEL_ID, LocalProvider
from scripts.bench.harness import command_line

DEFAULT_CACHE = Path.home() / ".cache" / "memory-service-bench"
CORPUS_NAME = "debian-docs-minilm"
# (Debian package, folder of its HTML pages), read in this order.
SOURCES: tuple[tuple[str, str], ...] = (
    ("python3.11-doc", "/usr/share/doc/python3.11/html"),
    ("postgresql-doc-15", "/usr/share/doc/postgresql-doc-15/html"),
    ("python-django-doc", "/usr/share/doc/python-django-doc/html"),
)
QUERY_POOL = 1_000
CHUNK = 4_096
SEED = 20_240_611
MIN_WORDS, MAX_WORDS = 5, 60

_BLOCK_TAGS = frozenset(
    {"p", "div", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "tr", "br"}
    | {"table", "section", "blockquote", "pre", "ul", "ol", "dl", "title", "caption", "body"}
)
_SKIPPED_TAGS = frozenset({"pre", "script", "style", "head", "textarea"})
# A sentence ends at . ! or ? (maybe closed by a quote or bracket) before a capital.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]\u201d\u2019]?\s+(?=[A-Z\"'(\[\u201c])")
_SENTENCE_END = re.compile(r"[.!?][\"')\]\u201d\u2019]?$")


class _TextBlocks(HTMLParser):
    """The page's text as blocks (paragraphs, list items, cells), code samples left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._current: list[str] = []
        self._skipping = 0

    def _flush(self) -> None:
        block = " ".join("".join(self._current).split())
        if block:
            self.blocks.append(block)
        self._current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skipping:
            self._skipping -= 1
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._current.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _is_sentence(candidate: str) -> bool:
    words = len(candidate.split())
    letters = sum(char.isalpha() for char in candidate)
    return (
        MIN_WORDS <= words <= MAX_WORDS
        and _SENTENCE_END.search(candidate) is not None
        and letters >= 0.6 * len(candidate)
    )


def page_sentences(html: str) -> Iterator[str]:
    parser = _TextBlocks()
    parser.feed(html)
    parser.close()
    for block in parser.blocks:
        for candidate in _SENTENCE_BREAK.split(block):
            if _is_sentence(candidate.strip()):
                yield candidate.strip()


def source_pages(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.rglob("*.html") if "_modules" not in path.relative_to(folder).parts
    )


def extract_sentences(sources: Sequence[tuple[str, str]]) -> list[str]:
    """Distinct sentences of every source, in source, page and document order."""
    seen: set[str] = set()
    sentences = []
    for package, folder in sources:
        root = Path(folder)
        if not root.is_dir():
            raise SystemExit(f"{folder} is missing: apt-get install -y {package} (as root)")
        for page in source_pages(root):
            for sentence in page_sentences(page.read_text(errors="replace")):
                if sentence not in seen:
                    seen.add(sentence)
                    sentences.append(sentence)
    return sentences


def package_version(package: str) -> str:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    )
    return result.stdout.strip() or "unknown"


@dataclass(frozen=True)
class Corpus:
    """A cached corpus: its texts, and the vectors of however many of them are embedded."""

    folder: Path
    texts: list[str]
    chunk: int

    @property
    def vector_folder(self) -> Path:
        return self.folder / "vectors"

    def chunk_path(self, index: int) -> Path:
        return self.vector_folder / f"{index:05d}.npy"

    def chunk_count(self) -> int:
        return -(-len(self.texts) // self.chunk)

    def save_chunk(self, index: int, vectors: Vectors) -> None:
        """Write a chunk whole or not at all: a reader never sees half a file."""
        partial = self.chunk_path(index).with_suffix(".partial.npy")
        np.save(partial, vectors)
        partial.replace(self.chunk_path(index))

    def embedded(self) -> int:
        """How many texts, from the start, have their vectors cached."""
        done = 0
        for index in range(self.chunk_count()):
            if not self.chunk_path(index).is_file():
                break
            done = min(len(self.texts), (index + 1) * self.chunk)
        return done

    def vectors(self, start: int, stop: int) -> Vectors:
        """The vectors of texts[start:stop]; only the chunks they lie in are read."""
        if stop > self.embedded():
            raise SystemExit(
                f"only {self.embedded()} of the {stop} vectors needed are cached in "
                f"{self.folder}: run `.venv/bin/python -m scripts.bench.corpus --limit {stop}`"
            )
        parts = []
        for index in range(start // self.chunk, -(-stop // self.chunk)):
            part = np.load(self.chunk_path(index), mmap_mode="r")
            base = index * self.chunk
            parts.append(part[max(start, base) - base : min(stop, base + len(part)) - base])
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def queries(self, count: int) -> tuple[list[str], Vectors]:
        """The first `count` held-out query sentences and their vectors."""
        if count > QUERY_POOL:
            raise SystemExit(f"at most {QUERY_POOL} queries are held out")
        return self.texts[:count], self.vectors(0, count)

    def rows(self, count: int) -> tuple[list[str], Vectors]:
        """The first `count` row sentences (never a query) and their vectors."""
        if QUERY_POOL + count > len(self.texts):
            raise SystemExit(f"the corpus has {len(self.texts) - QUERY_POOL} row sentences")
        return self.texts[QUERY_POOL : QUERY_POOL + count], self.vectors(
            QUERY_POOL, QUERY_POOL + count
        )


def has_texts(folder: Path) -> bool:
    return (folder / "texts.txt").is_file()


def open_corpus(cache_dir: Path = DEFAULT_CACHE, name: str = CORPUS_NAME) -> Corpus:
    """The cached corpus `name`; exits with the command that builds it when it is missing."""
    folder = cache_dir / name
    texts_path = folder / "texts.txt"
    if not texts_path.is_file():
        raise SystemExit(f"no corpus in {folder}: run `.venv/bin/python -m scripts.bench.corpus`")
    meta = json.loads((folder / "corpus.json").read_text())
    texts = texts_path.read_text().split("\n")
    if len(texts) != meta["count"]:
        raise SystemExit(f"{texts_path} does not match corpus.json: delete {folder} to rebuild")
    return Corpus(folder, texts, int(meta["chunk"]))


async def build_texts(folder: Path, provider: LocalProvider) -> None:
    """Extract, filter, shuffle and record the texts (`texts.txt`, `corpus.json`)."""
    sentences = extract_sentences(SOURCES)
    counts = await provider.count_tokens(sentences)
    fitting = [
        text for text, tokens in zip(sentences, counts, strict=True) if tokens <= provider.window
    ]
    order = np.random.default_rng(SEED).permutation(len(fitting))
    texts = [fitting[index] for index in order]
    meta = {
        "sources": [
            {"package": package, "folder": path, "version": package_version(package)}
            for package, path in SOURCES
        ],
        "extracted": len(sentences),
        "over_window": len(sentences) - len(fitting),
        "count": len(texts),
        "model": BUNDLED_MODEL_ID,
        "dimension": provider.dimension,
        "chunk": CHUNK,
        "query_pool": QUERY_POOL,
        "seed": SEED,
    }
    write_texts(folder, texts, meta)


def write_texts(folder: Path, texts: Sequence[str], meta: dict[str, Any]) -> None:
    """Record a new corpus, dropping the vectors of any earlier one."""
    body = "\n".join(texts)
    (folder / "vectors").mkdir(parents=True, exist_ok=True)
    for stale in (folder / "vectors").glob("*.npy"):
        stale.unlink()
    (folder / "texts.txt").write_text(body)
    meta = {**meta, "sha256": hashlib.sha256(body.encode()).hexdigest()}
    (folder / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")


async def embed_chunk(provider: LocalProvider, texts: Sequence[str]) -> Vectors:
    """Vectors in input order. Texts go to the model sorted by length, so each batch pads
    to texts of about its own length rather than to the longest of the chunk."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    vectors = await provider.embed([texts[index] for index in order])
    result = np.empty_like(vectors)
    result[order] = vectors
    return result


async def embed_missing(corpus: Corpus, provider: LocalProvider, limit: int) -> float:
    """Embed every missing chunk of texts[:limit]; returns the seconds spent embedding."""
    target = min(limit, len(corpus.texts))
    done = corpus.embedded()
    spent = 0.0
    with tqdm(total=target, initial=min(done, target), unit="text", mininterval=5) as bar:
        for index in range(done // corpus.chunk, -(-target // corpus.chunk)):
            texts = corpus.texts[index * corpus.chunk : (index + 1) * corpus.chunk]
            started = time.perf_counter()
            vectors = await embed_chunk(provider, texts)
            spent += time.perf_counter() - started
            corpus.save_chunk(index, vectors)
            bar.update(len(texts))
    return spent


async def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    folder: Path = args.cache_dir / CORPUS_NAME
    provider = await LocalProvider.load(max_batch=args.batch)
    try:
        if args.rebuild or not has_texts(folder):
            started = time.perf_counter()
            await build_texts(folder, provider)
            print(f"texts extracted in {time.perf_counter() - started:.1f} s")
        corpus = open_corpus(args.cache_dir)
        before = corpus.embedded()
        spent = await embed_missing(corpus, provider, args.limit)
        after = corpus.embedded()
    finally:
        await provider.aclose()
    rate = (after - before) / spent if spent else 0.0
    print(
        f"corpus {folder}: {len(corpus.texts)} sentences ({QUERY_POOL} held-out queries), "
        f"{after} embedded; this run embedded {after - before} in {spent:.1f} s "
        f"({rate:.0f} texts/s, {args.threads} torch threads)"
    )
    print(f"reproduce: {command_line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--limit", type=int, default=10**9, help="embed only the first N texts (all by default)"
    )
    parser.add_argument("--batch", type=int, default=64, help="texts per model call")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads"
    )
    parser.add_argument("--rebuild", action="store_true", help="extract the texts again")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
