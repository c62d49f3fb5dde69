"""Ingest documents: a thin shim over `memory-service ingest` (same arguments).

.venv/bin/python scripts/ingest_documents.py docs/ --namespace docs
"""

import sys

from memory_service.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
