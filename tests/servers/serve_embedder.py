"""A vLLM-compatible embedding server in a process of its own, so a test can SIGKILL it.

    python -m tests.servers.serve_embedder --port 8123

Serves `OpenAICompatServer` on 127.0.0.1 with the bundled all-MiniLM-L6-v2 (loaded offline,
`bundled_embedder`) and runs until SIGTERM or SIGINT.
"""

import argparse
import signal
import threading

from tests.servers.embedder import bundled_embedder, bundled_model, max_chars_per_token
from tests.servers.openai_compat import OpenAICompatServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    embed, count_tokens = bundled_embedder()
    server = OpenAICompatServer(
        embed,
        tokenizer_count=count_tokens,
        served_model_name=args.model,
        max_chars_per_token=max_chars_per_token(bundled_model()),
    )
    server.start(args.port)
    try:
        print(f"serving {server.url}", flush=True)
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
