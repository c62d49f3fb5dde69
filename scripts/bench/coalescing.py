"""Coalescing: 64 concurrent single stores against one provider, coalesced vs not.

Each round sends 64 `POST /v1/memories` at once over HTTP to the running service, whose
only provider is a vLLM-compatible loopback server running the real bundled model (or a
real vLLM with `--vllm-url`). `--provider-latency-ms` adds a fixed delay to every answer of
the loopback server, as a provider on another host or a cloud API has.

Modes: `per-request` sets `coalesce_max_batch=1`, so each store makes its own provider call;
`coalesced` uses the service's request coalescing (window 5 ms); `no-embedding` is the
ceiling: the only provider refuses connections, so stores are answered `pending` without any
embedding, and no embedding can make a store faster than that. Prints stores/s per mode,
provider calls per round, and the ratio coalesced / per-request.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from scripts.bench.harness import (
    command_line,
    free_port,
    providers_yaml,
    scratch_database,
    serve_process,
)
from tests.servers import OpenAICompatServer, bundled_embedder


async def run_mode(
    database_url: str,
    providers: Path,
    coalesce: bool,
    rounds: int,
    concurrency: int,
    tag: str,
    expected_status: str = "embedded",
) -> tuple[float, float]:
    """Stores/s over `rounds` rounds of `concurrency` simultaneous single stores, each agent
    with its own HTTP client (one shared pool would measure the client's pool, not us)."""
    with serve_process(
        database_url,
        providers_file=str(providers),
        reconciler="false",
        probe_interval_seconds="3600",
        coalesce_window_ms="5",
        coalesce_max_batch="256" if coalesce else "1",
        pool_size=str(concurrency),
    ) as base:
        agents = [httpx.AsyncClient(base_url=base, timeout=60) for _ in range(concurrency)]
        elapsed = 0.0
        try:
            for round_ in range(rounds + 1):  # round 0 warms up and is not counted
                bodies = [
                    {
                        "namespace": f"bench-{tag}",
                        "content": f"{tag} round {round_} memory {i}: the user mentioned "
                        "a preference about their morning routine.",
                    }
                    for i in range(concurrency)
                ]
                started = time.perf_counter()
                posts = [
                    agent.post("/v1/memories", json=body)
                    for agent, body in zip(agents, bodies, strict=True)
                ]
                responses = await asyncio.gather(*posts)
                if round_:
                    elapsed += time.perf_counter() - started
                bad = [
                    r
                    for r in responses
                    if r.status_code != 201 or r.json()["status"] != expected_status
                ]
                if bad:
                    raise SystemExit(f"{len(bad)} stores failed: {bad[0].text}")
        finally:
            for agent in agents:
                await agent.aclose()
    return rounds * concurrency / elapsed, elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--vllm-url", help="a real vLLM serving all-MiniLM-L6-v2 instead")
    parser.add_argument(
        "--provider-latency-ms", type=float, default=0.0, help="delay every provider answer"
    )
    args = parser.parse_args()

    server = None
    if args.vllm_url is None:
        embed, count_tokens = bundled_embedder()
        server = OpenAICompatServer(embed, tokenizer_count=count_tokens).start()
        if args.provider_latency_ms:
            server.faults.slow(args.provider_latency_ms / 1000)
    url = args.vllm_url or (server.url if server else "")
    try:
        with scratch_database() as database_url, tempfile.TemporaryDirectory() as folder:
            providers = providers_yaml(
                Path(folder),
                [
                    f'{{name: vllm, kind: vllm, base_url: "{url}", model: all-MiniLM-L6-v2,'
                    " space: default, priority: 10, max_batch: 256}"
                ],
            )
            results: dict[str, tuple[float, float, int | None]] = {}
            # The store path alone: a provider that refuses connections, writes answered
            # pending. No embedding can make a store faster than this.
            dead = providers_yaml(
                Path(folder) / "dead",
                [
                    f'{{name: dead, kind: vllm, base_url: "http://127.0.0.1:{free_port()}",'
                    " model: all-MiniLM-L6-v2, space: default, priority: 10}"
                ],
            )
            results["no-embedding"] = (
                *await run_mode(
                    database_url, dead, True, args.rounds, args.concurrency, "none", "pending"
                ),
                None,
            )
            for mode, coalesce in (("per-request", False), ("coalesced", True)):
                calls_before = server.requests.count("/v1/embeddings") if server else 0
                rate, elapsed = await run_mode(
                    database_url, providers, coalesce, args.rounds, args.concurrency, mode
                )
                calls = (server.requests.count("/v1/embeddings") - calls_before) if server else None
                results[mode] = (rate, elapsed, calls)
    finally:
        if server is not None:
            server.stop()

    provider = args.vllm_url or (
        "loopback vLLM-compatible server (real bundled model)"
        + (f", +{args.provider_latency_ms:.0f} ms per answer" if args.provider_latency_ms else "")
    )
    print(f"provider: {provider}")
    print(f"{args.rounds} rounds x {args.concurrency} concurrent single stores (+1 warm-up round)")
    for mode, (rate, elapsed, calls) in results.items():
        per_round = (
            "" if calls is None else f", {calls / (args.rounds + 1):.1f} provider calls/round"
        )
        print(f"  {mode:12s} {rate:8.1f} stores/s ({elapsed:.2f} s){per_round}")
    ratio = results["coalesced"][0] / results["per-request"][0]
    print(f"throughput ratio coalesced / per-request: {ratio:.2f}x")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    asyncio.run(main())
