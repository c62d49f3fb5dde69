"""A vLLM-compatible embedding server in a process of its own, so a test can SIGKILL it.

    python -m tests.servers.serve_embedder --port 8123

Serves `OpenAICompatServer` on 127.0.0.1 with the hashed stand-in model (`hashed_embedder`:
loads nothing, starts in about a second) and runs until SIGTERM or SIGINT.
"""

import argparse
import signal
import threading

from tests.servers.embedder import hashed_embedder
from tests.servers.openai_compat import OpenAICompatServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    embed, count_tokens = hashed_embedder(args.dimension)
    server = OpenAICompatServer(embed, tokenizer_count=count_tokens, served_model_name=args.model)
    server.start(args.port)
    try:
        print(f"serving {server.url}", flush=True)
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
