"""Bulk writes: memories per second end to end against the model's raw batched rate.

1. Raw: the bundled model alone (`LocalProvider`, `MEMORY_MODEL_THREADS` threads), the same
   texts in calls of 64, in this process while nothing else runs.
2. Batch API: `memory-service serve` on the embedded default; `POST /v1/memories/batch`
   with `--batch` items at a time, one client, until `--memories` are stored. Each answer
   must say `embedded` (the inline bound is raised so a batch is never answered pending).
3. Reconciler: `serve` with an embedder that refuses connections stores `--memories`
   memories pending; then `serve` on the embedded default, reconciler on, embeds them; the
   time runs from its start (after /health) until `memory_memories_unembedded` says 0.

Prints each rate and its share of the raw rate.
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
    pending_memories,
    providers_yaml,
    scratch_database,
    serve_process,
)

_WORD_TEXT = """harbor violet engine orchard signal granite lantern meadow copper winter garden
bridge market window thunder pencil circle mirror ladder forest candle silver pocket rabbit"""
WORDS = _WORD_TEXT.split()


def texts(count: int) -> list[str]:
    rng = random.Random(11)
    return [
        f"Memory {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 24))) + "."
        for i in range(count)
    ]


async def raw_rate(contents: list[str], threads: int) -> float:
    from memory_service.providers.local import LocalProvider

    provider = await LocalProvider.load(threads=threads)
    try:
        await provider.embed(contents[:64])  # warm-up
        started = time.perf_counter()
        await provider.embed(contents)
        return len(contents) / (time.perf_counter() - started)
    finally:
        await provider.aclose()


async def store_all(base: str, contents: list[str], batch: int, expected: str) -> float:
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        started = time.perf_counter()
        for start in range(0, len(contents), batch):
            items = [{"namespace": "bench", "content": c} for c in contents[start : start + batch]]
            response = await client.post("/v1/memories/batch", json={"items": items})
            response.raise_for_status()
            statuses = {item["status"] for item in response.json()["items"]}
            if statuses != {expected}:
                raise SystemExit(f"batch answered {statuses}, expected {expected}")
        return len(contents) / (time.perf_counter() - started)


async def reconciled_rate(base: str, count: int) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for _ in range(36_000):  # two hours at most
            if await pending_memories(client) == 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise SystemExit("the reconciler did not finish within two hours")
    return count / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> None:
    contents = texts(args.memories)
    raw = await raw_rate(contents, args.threads)
    common = {"model_threads": str(args.threads), "index_maintainer": "false"}
    with scratch_database() as url, tempfile.TemporaryDirectory() as folder:
        with serve_process(url, reconciler="false", inline_embed_seconds="600", **common) as base:
            batch_rate = await store_all(base, contents, args.batch, "embedded")
        dead = providers_yaml(
            Path(folder),
            [
                f'{{name: dead, kind: vllm, base_url: "http://127.0.0.1:{free_port()}",'
                " model: all-MiniLM-L6-v2, space: default, priority: 10}"
            ],
        )
        pending = [f"Pending {c}" for c in contents]
        with serve_process(url, reconciler="false", providers_file=str(dead), **common) as base:
            await store_all(base, pending, args.batch, "pending")
        with serve_process(
            url,
            reconciler="true",
            reconcile_interval_seconds="0.1",
            reconcile_batch_size=str(args.reconcile_batch),
            **common,
        ) as base:
            reconcile_rate = await reconciled_rate(base, len(pending))
    print(command_line())
    print(f"{args.memories} memories of 10-24 words; model threads {args.threads}")
    print(f"raw model rate (calls of 64):      {raw:7.1f} texts/s")
    print(
        f"POST /v1/memories/batch ({args.batch}/call): {batch_rate:7.1f} memories/s "
        f"({batch_rate / raw:.0%} of raw)"
    )
    print(
        f"reconciler (batches of {args.reconcile_batch}):       {reconcile_rate:7.1f} memories/s "
        f"({reconcile_rate / raw:.0%} of raw)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--reconcile-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
