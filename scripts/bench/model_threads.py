"""Model threads: interactive latency and batch throughput of the bundled model per torch
thread count (`MEMORY_MODEL_THREADS`).

For each `--threads` value, a fresh process loads the bundled model the way the service
does (`LocalProvider.load(threads=n)`) and measures:

- one sentence, encoded `--singles` times back to back: p50/p99 latency, on an otherwise
  idle machine;
- the same while `--busy` other processes each spin a core, as PostgreSQL, the event loop
  and an ingestion's chunking do on a single-host install;
- `--chunks` texts of about 200 tokens in calls of 64: texts per second (the bulk rate).
"""

import argparse
import asyncio
import json
import multiprocessing
import subprocess
import sys
import time

from scripts.bench.harness import command_line, median, percentile

SENTENCE = "The user keeps the spare key under the blue flowerpot by the back door."
CHUNK = " ".join(["the quarterly harbor report lists copper and granite shipments"] * 20)


def _spin(stop: "multiprocessing.synchronize.Event") -> None:
    while not stop.is_set():
        pass


async def _singles(provider: object, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await provider.embed([SENTENCE])  # type: ignore[attr-defined]
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def measure(threads: int, singles: int, busy: int, chunks: int) -> dict[str, float]:
    from memory_service.providers.local import LocalProvider

    provider = await LocalProvider.load(threads=threads)
    try:
        await _singles(provider, 20)  # warm-up
        idle = await _singles(provider, singles)
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(busy)]
        for spinner in spinners:
            spinner.start()
        try:
            loaded = await _singles(provider, singles)
        finally:
            stop.set()
            for spinner in spinners:
                spinner.join()
        texts = [f"{i} {CHUNK}" for i in range(chunks)]
        started = time.perf_counter()
        await provider.embed(texts)
        rate = chunks / (time.perf_counter() - started)
    finally:
        await provider.aclose()
    return {
        "idle_p50": median(idle),
        "idle_p99": percentile(idle, 0.99),
        "busy_p50": median(loaded),
        "busy_p99": percentile(loaded, 0.99),
        "chunks_per_second": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--busy", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child's thread count
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(asyncio.run(measure(args.one, args.singles, args.busy, args.chunks))))
        return
    rows = []
    for threads in args.threads:
        child = [sys.executable, "-m", "scripts.bench.model_threads", "--one", str(threads)]
        child += ["--singles", str(args.singles), "--busy", str(args.busy)]
        child += ["--chunks", str(args.chunks)]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        rows.append((threads, json.loads(out.strip().splitlines()[-1])))
    print(command_line())
    print(
        f"{'threads':>7}  {'idle p50':>9} {'idle p99':>9}  {'busy p50':>9} {'busy p99':>9}  "
        f"{'chunks/s':>8}"
    )
    for threads, r in rows:
        print(
            f"{threads:>7}  {r['idle_p50']:7.1f}ms {r['idle_p99']:7.1f}ms  "
            f"{r['busy_p50']:7.1f}ms {r['busy_p99']:7.1f}ms  {r['chunks_per_second']:8.1f}"
        )
    print(f"busy: {args.busy} process(es) spinning a core each during the second measure")


if __name__ == "__main__":
    main()
