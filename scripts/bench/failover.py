"""Failover: kill the primary provider in the middle of a store loop.

Two vLLM-compatible loopback servers run the real bundled model for the same space: the
primary (priority 10) and the fallback (priority 20). A loop stores memories one after
another over HTTP; after `--kill-after` stores the primary is stopped for good (`--fault
stop`: its port then refuses connections, as when the process dies), or made to fail in
another way (`--fault drop|error_500|hang`). Reports the latency of each phase, the latency
the failure added to the worst request (worst after minus median before), failed requests
(anything but 201 with status `embedded`), and which server embedded what.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from scripts.bench.harness import (
    command_line,
    median,
    percentile,
    providers_yaml,
    scratch_database,
    serve_process,
)
from tests.servers import OpenAICompatServer, bundled_embedder


async def store_loop(
    base: str, stores: int, kill_after: int, primary: OpenAICompatServer, fault: str
) -> tuple[list[float], list[float], int]:
    before: list[float] = []
    after: list[float] = []
    failed = 0
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        for i in range(stores):
            if i == kill_after:
                if fault == "stop":
                    await asyncio.to_thread(primary.stop)
                else:
                    getattr(primary.faults, fault)()
            body = {"namespace": "failover", "content": f"memory {i}: the build broke on {i}"}
            started = time.perf_counter()
            response = await http.post("/v1/memories", json=body)
            latency = time.perf_counter() - started
            (before if i < kill_after else after).append(latency)
            if response.status_code != 201 or response.json()["status"] != "embedded":
                failed += 1
    return before, after, failed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", type=int, default=300)
    parser.add_argument("--kill-after", type=int, default=100)
    parser.add_argument("--fault", choices=["stop", "drop", "error_500", "hang"], default="stop")
    parser.add_argument("--read-timeout", type=float, default=2.0)
    args = parser.parse_args()

    embed, count_tokens = bundled_embedder()
    primary = OpenAICompatServer(embed, tokenizer_count=count_tokens).start()
    fallback = OpenAICompatServer(embed, tokenizer_count=count_tokens).start()
    try:
        with scratch_database() as database_url, tempfile.TemporaryDirectory() as folder:
            common = f"model: all-MiniLM-L6-v2, space: default, read_timeout: {args.read_timeout}"
            entries = [
                f'{{name: {name}, kind: vllm, base_url: "{server.url}", priority: {priority}, '
                f"{common}}}"
                for name, server, priority in (("primary", primary, 10), ("fallback", fallback, 20))
            ]
            providers = providers_yaml(Path(folder), entries)
            with serve_process(
                database_url,
                providers_file=str(providers),
                reconciler="false",
                probe_interval_seconds="3600",
            ) as base:
                primary.requests.clear()
                fallback.requests.clear()
                before, after, failed = await store_loop(
                    base, args.stores, args.kill_after, primary, args.fault
                )
    finally:
        primary.stop()
        fallback.stop()

    worst_after = max(after)
    added = worst_after - median(before)
    print(
        f"{args.stores} sequential stores; primary fails ({args.fault}) before store "
        f"{args.kill_after}; read timeout {args.read_timeout}s"
    )
    for phase, latencies in (("before", before), ("after", after)):
        print(
            f"  {phase:6s}  median {median(latencies) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, worst {max(latencies) * 1000:.1f} ms"
        )
    print(f"  latency added to the worst request: {added * 1000:.1f} ms")
    print(f"  failed requests: {failed} of {args.stores}")
    print(
        f"  embed calls: primary {primary.requests.count('/v1/embeddings')}, "
        f"fallback {fallback.requests.count('/v1/embeddings')}"
    )
    print(f"command: {command_line()}")


if __name__ == "__main__":
    asyncio.run(main())
