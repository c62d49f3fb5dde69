"""Real English text for search tests at realistic size: the docstrings of the standard
library, split into sentences. Deterministic for one Python version, and always installed
(no download, no data file in the repository)."""

import importlib
import inspect
import re
from collections.abc import Iterator
from types import ModuleType

_MODULES = [
    "os",
    "pathlib",
    "json",
    "re",
    "datetime",
    "collections",
    "itertools",
    "functools",
    "subprocess",
    "socket",
    "ssl",
    "asyncio",
    "threading",
    "logging",
    "argparse",
    "email",
    "http.client",
    "urllib.request",
    "sqlite3",
    "decimal",
    "fractions",
    "statistics",
    "random",
    "string",
    "textwrap",
    "unittest",
    "dataclasses",
    "enum",
    "tarfile",
    "zipfile",
    "shutil",
    "tempfile",
    "csv",
    "configparser",
    "pickle",
    "copy",
    "heapq",
    "bisect",
    "calendar",
    "time",
    "uuid",
    "hashlib",
    "hmac",
    "secrets",
    "base64",
    "struct",
    "codecs",
    "io",
    "difflib",
    "pprint",
    "inspect",
    "ast",
    "dis",
    "tokenize",
    "importlib",
    "pkgutil",
    "zipimport",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "html.parser",
    "mailbox",
    "smtplib",
    "ftplib",
    "poplib",
    "imaplib",
    "selectors",
    "signal",
    "mmap",
    "multiprocessing",
    "concurrent.futures",
    "queue",
    "sched",
    "contextlib",
    "abc",
    "numbers",
    "operator",
    "weakref",
    "types",
    "gettext",
    "locale",
    "platform",
    "sysconfig",
    "traceback",
    "warnings",
    "doctest",
    "pdb",
    "cProfile",
    "timeit",
    "trace",
    "gzip",
    "bz2",
    "lzma",
    "zlib",
    "glob",
    "fnmatch",
    "filecmp",
    "stat",
    "fileinput",
    "shlex",
    "cmd",
    "getpass",
    "optparse",
    "ipaddress",
    "wave",
    "colorsys",
]


def sentences(count: int) -> list[str]:
    """The first `count` distinct sentences of the modules' docstrings (6 to 40 words and at
    most 240 characters: each fits the bundled model's 256-token window)."""
    found: dict[str, None] = {}
    for module in _MODULES:
        for doc in _docstrings(importlib.import_module(module)):
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if (
                    6 <= len(sentence.split()) <= 40
                    and len(sentence) <= 240
                    and sentence[0].isupper()
                ):
                    found.setdefault(sentence)
                    if len(found) == count:
                        return list(found)
    raise ValueError(f"only {len(found)} sentences available, {count} asked")


def _docstrings(module: ModuleType) -> Iterator[str]:
    owned = [
        value
        for _, value in sorted(vars(module).items())
        if (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
    ]
    for value in [module, *owned]:
        yield inspect.getdoc(value) or ""
        if inspect.isclass(value):
            for _, member in sorted(vars(value).items()):
                if inspect.isfunction(member):
                    yield inspect.getdoc(member) or ""
