"""The `memory-service` command line: `main` parses and dispatches (`cli/main.py`); each
other module holds one command family. Commands open what they need through the app's
composition root; no domain package imports the CLI or the app."""

from memory_service.cli.main import build_parser, main
from memory_service.cli.output import format_providers

__all__ = ["build_parser", "format_providers", "main"]
