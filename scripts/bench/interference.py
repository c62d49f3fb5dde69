"""Interference: search latency on an idle service, then while a large ingestion job and
a reconciler backlog run.

First `memory-service serve`, behind an embedder that refuses connections, stores
`--backlog` memories: all `pending`. Then `serve` on its embedded default (bundled local
model, the same scratch PostgreSQL) with the reconciler off stores `--memories` embedded
ones and times `POST /v1/search` (hybrid, one client, back to back) for `--seconds`: the
idle figures. It restarts with the reconciler on, submits one inline ingestion job of
`--megabytes` MB of text (the default is the 16 MB a job may hold), and times the same
searches for `--seconds` while the reconciler embeds the backlog and the worker chunks and
embeds the job. Then, with the worker and the reconciler off, it times the same searches
again over what the loaded phase left (the job's chunks written so far): searches over a
larger corpus cost more by themselves, and this phase tells that apart from interference.
Prints p50/p99 of the phases, the ratio loaded/idle, and how far the job and the backlog
got. `--batch-chunks` sets the job's chunks per embed call and commit (the
service's default, 512, unless given). Nothing else runs: PostgreSQL, the service and this
client share the machine, as a single-host install does.
"""

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import httpx

from scripts.bench.harness import (
    command_line,
    free_port,
    median,
    pending_memories,
    percentile,
    providers_yaml,
    scratch_database,
    serve_process,
)

_WORD_TEXT = """river harbor engine orchard signal granite violet lantern meadow copper winter
garden bridge market window thunder pencil circle mirror ladder forest candle silver pocket
rabbit desert planet island shadow button velvet anchor kettle"""
WORDS = tuple(_WORD_TEXT.split())
QUERIES = [
    "where did the user leave the spare key",
    "what does the user prefer for breakfast",
    "which meeting moved to thursday",
    "notes about the copper bridge project",
    "the garden lantern and the winter market",
]


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
    return " ".join(words).capitalize() + "."


def documents(megabytes: float, rng: random.Random) -> list[dict[str, str]]:
    """Documents of ~1 MB of sentences each, `megabytes` in all (at most the 16 M
    characters a job may hold: `--megabytes 16` is 16,000,000)."""
    budget = int(megabytes * 1_000_000) - 100  # the last sentence may overshoot
    out: list[dict[str, str]] = []
    while budget > 0:
        size = min(1_000_000, budget)
        parts, length = [], 0
        while length < size:
            text = sentence(rng)
            parts.append(text)
            length += len(text) + 1
        out.append({"source_uri": f"bench://doc/{len(out)}", "text": " ".join(parts)})
        budget -= length
    return out


async def search_latencies(client: httpx.AsyncClient, seconds: float) -> list[float]:
    latencies = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        body = {"namespace": "bench", "query": QUERIES[i % len(QUERIES)], "k": 10}
        started = time.perf_counter()
        response = await client.post("/v1/search", json=body)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"search failed: {response.status_code} {response.text}")
        i += 1
    return latencies


async def submitted(client: httpx.AsyncClient, docs: list[dict[str, str]]) -> str:
    """The id of an inline job of `docs`, once the worker has claimed it (it polls the queue
    every second)."""
    job = await client.post("/v1/ingest/jobs", json={"namespace": "bench", "documents": docs})
    if job.status_code != 202:
        raise SystemExit(f"job refused: {job.status_code} {job.text[:300]}")
    job_id: str = job.json()["id"]
    for _ in range(600):
        if (await client.get(f"/v1/ingest/jobs/{job_id}")).json()["state"] != "queued":
            return job_id
        await asyncio.sleep(0.05)
    raise SystemExit("the job was not claimed within 30 s")


def summary(name: str, latencies: list[float]) -> str:
    return (
        f"{name:<22} {len(latencies):>6} searches  p50 {median(latencies):7.1f} ms  "
        f"p99 {percentile(latencies, 0.99):7.1f} ms"
    )


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(7)
    with scratch_database() as url, tempfile.TemporaryDirectory() as folder:
        dead = providers_yaml(
            Path(folder),
            [
                f'{{name: dead, kind: vllm, base_url: "http://127.0.0.1:{free_port()}",'
                " model: all-MiniLM-L6-v2, space: default, priority: 10}"
            ],
        )
        with serve_process(url, reconciler="false", providers_file=str(dead)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=300) as client:
                await store(client, [f"Backlog {i}: {sentence(rng)}" for i in range(args.backlog)])
        common = {"index_maintainer": "false", "ingest_batch_chunks": str(args.batch_chunks)}
        with serve_process(url, reconciler="false", **common) as base:
            async with httpx.AsyncClient(base_url=base, timeout=300) as client:
                await store(client, [sentence(rng) for _ in range(args.memories)])
                await search_latencies(client, 3)  # warm-up, not counted
                idle = await search_latencies(client, args.seconds)
        with serve_process(url, reconciler="true", **common) as base:
            async with httpx.AsyncClient(base_url=base, timeout=300) as client:
                docs = documents(args.megabytes, rng)
                chars = sum(len(d["text"]) for d in docs)
                job_id = await submitted(client, docs)
                loaded = await search_latencies(client, args.seconds)
                state = (await client.get(f"/v1/ingest/jobs/{job_id}")).json()
                left = await pending_memories(client)
        with serve_process(url, reconciler="false", ingest_worker="false", **common) as base:
            async with httpx.AsyncClient(base_url=base, timeout=300) as client:
                await search_latencies(client, 3)  # warm-up, not counted
                after = await search_latencies(client, args.seconds)
    print(command_line())
    print(
        f"job: {len(docs)} documents, {chars / 1e6:.1f} M characters; "
        f"reconciler backlog: {args.backlog} memories"
    )
    print(summary("idle", idle))
    print(summary("during ingestion", loaded))
    print(summary("idle, corpus after", after))
    print(
        f"p99 ratio loaded/idle: {percentile(loaded, 0.99) / percentile(idle, 0.99):.1f}x  "
        f"p50 ratio: {median(loaded) / median(idle):.1f}x"
    )
    progress = state["progress"]
    print(
        f"after the loaded phase: job {state['state']}, {progress['chunks']} chunks written, "
        f"{progress['documents_done']}/{progress['documents_total']} documents; "
        f"backlog {args.backlog - left}/{args.backlog} embedded"
    )


async def store(client: httpx.AsyncClient, contents: list[str]) -> None:
    items = [{"namespace": "bench", "content": content} for content in contents]
    for start in range(0, len(items), 500):
        response = await client.post(
            "/v1/memories/batch", json={"items": items[start : start + 500]}
        )
        response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=2_000)
    parser.add_argument("--backlog", type=int, default=5_000)
    parser.add_argument("--megabytes", type=float, default=16.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--batch-chunks",
        type=int,
        default=512,
        help="MEMORY_INGEST_BATCH_CHUNKS of the service: chunks per embed call and commit",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
