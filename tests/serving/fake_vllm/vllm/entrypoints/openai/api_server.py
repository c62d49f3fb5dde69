"""`python -m vllm.entrypoints.openai.api_server`, faked: vLLM's flags, the loopback vLLM's wire.

Parses the flags `memory-service vllm serve` passes (unknown vLLM flags are accepted and
ignored, as pass-through args must be), loads the sentence-transformers folder given as
`--model`, and serves it with the loopback vLLM server of tests/servers (vLLM 0.32's
`/health`, `/v1/models`, `/v1/embeddings`) on `--host`/`--port`, under uvicorn, which stops
on SIGTERM like vLLM does. It logs to stderr, as vLLM does. With `--runner generate` it
serves the loopback chat server's vLLM flavour instead (`/v1/chat/completions`), its context
window `--max-model-len`.

The test sets one behaviour through the environment:
- VLLM_FAKE_EXIT=<status>: print a vLLM-like error and exit at once with that status;
- VLLM_FAKE_NEVER_HEALTHY=1: start, never listen (the health wait must time out);
- VLLM_FAKE_RECORD=<file>: write the argv, the relevant environment and the names of every
  variable it was given there as JSON.
"""

import argparse
import json
import os
import sys
import time


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vllm.entrypoints.openai.api_server")
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--runner", choices=["auto", "generate", "pooling", "draft"])
    parser.add_argument("--convert", choices=["auto", "none", "embed", "classify", "reward"])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-model-len", type=int, default=256)
    args, _ignored = parser.parse_known_args(argv)
    return args


def main() -> None:
    args = parse(sys.argv[1:])
    record = os.environ.get("VLLM_FAKE_RECORD")
    if record:
        watched = ("HF_HUB_OFFLINE", "VLLM_CPU_OMP_THREADS_BIND")
        with open(record, "w") as file:
            environment = {key: os.environ.get(key) for key in watched}
            names = sorted(os.environ)
            json.dump(
                {"pid": os.getpid(), "argv": sys.argv[1:], "env": environment, "names": names},
                file,
            )
    print(f"INFO fake vLLM: model {args.model} on {args.host}:{args.port}", file=sys.stderr)
    if os.environ.get("VLLM_FAKE_EXIT"):
        print(f"ValueError: cannot load model {args.model!r}", file=sys.stderr, flush=True)
        sys.exit(int(os.environ["VLLM_FAKE_EXIT"]))
    if os.environ.get("VLLM_FAKE_NEVER_HEALTHY"):
        while True:
            time.sleep(60)
    serve(args)


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    if args.runner == "generate":
        from tests.servers.chat_server import ChatServer

        chat = ChatServer(
            "vllm", args.served_model_name or [args.model], context_window=args.max_model_len
        )
        uvicorn.run(chat._protocol_app(), host=args.host, port=args.port, log_level="info")
        return
    from sentence_transformers import SentenceTransformer

    from tests.servers.embedder import embedder_from_model, max_chars_per_token
    from tests.servers.openai_compat import OpenAICompatServer

    model = SentenceTransformer(args.model, device="cpu")
    embed, count_tokens = embedder_from_model(model)
    server = OpenAICompatServer(
        embed,
        tokenizer_count=count_tokens,
        served_model_name=args.served_model_name or [args.model],
        max_model_len=args.max_model_len,
        model_root=args.model,
        max_chars_per_token=max_chars_per_token(model),
    )
    uvicorn.run(server._protocol_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
