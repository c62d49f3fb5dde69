"""The input contract every JSON body meets before any route sees it.

PostgreSQL cannot store a NUL character in `text` or `jsonb`, nor a lone UTF-16 surrogate,
and JSON has no NaN or Infinity (Python's parser accepts them anyway). Rather than let such
a value fail deep inside a statement, a body holding one is refused whole with a 422
`invalid_value` that names the field (`items[3].metadata.note`); nothing is written.
"""

import json
import math
from typing import Any


class InvalidValue(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field or 'body'}: {reason}")
        self.field = field or "body"
        self.reason = reason


def check_json(body: bytes) -> None:
    """Raise InvalidValue for the first value of `body` that breaks the contract; leave a
    body that is not JSON at all to the route's own parser (its 422 names the problem)."""
    try:
        document = json.loads(body, parse_constant=_NotANumber)
    except (ValueError, RecursionError):
        return
    _walk(document, "")


class _NotANumber:
    """What Python's parser makes of `NaN`, `Infinity` and `-Infinity`, kept to be refused
    where it stands."""

    def __init__(self, name: str) -> None:
        self.name = name


def _walk(value: Any, path: str) -> None:
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, _NotANumber):
        raise InvalidValue(path, f"{value.name} is not a JSON number")
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidValue(path, "a number too large to represent")
    elif isinstance(value, dict):
        for key, item in value.items():
            named = json.dumps(key)[1:-1]  # escaped: a bad key is named readably
            field = f"{path}.{named}" if path else named
            _check_text(key, field, in_key=True)
            _walk(item, field)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]")


def _check_text(text: str, path: str, in_key: bool = False) -> None:
    where = "a key" if in_key else "text"
    if "\x00" in text:
        raise InvalidValue(path, f"{where} with a NUL character (\\u0000) cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(path, f"{where} with a lone surrogate is not valid Unicode") from None
