"""Who acts and which namespaces they may touch, as values the services and their SQL use.

`Actor` is the API key behind a write, recorded in the audit columns (migration 0011);
`NOBODY` writes with authentication off.

A pattern is an exact namespace (`alice`) or a prefix ending in `*` (`team-a:*`, which
matches `team-a:` and everything after it). `EVERY_NAMESPACE` is the caller without
restriction: the service with authentication off, or a key made with `*`.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, false, func, or_, true

from memory_service.core.errors import Forbidden


@dataclass(frozen=True)
class Namespaces:
    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> "Namespaces":
        patterns = list(patterns)
        return cls(
            exact=frozenset(p for p in patterns if not p.endswith("*")),
            prefixes=tuple(sorted(p[:-1] for p in patterns if p.endswith("*"))),
        )

    @property
    def everything(self) -> bool:
        return "" in self.prefixes

    def allows(self, namespace: str) -> bool:
        return namespace in self.exact or any(namespace.startswith(p) for p in self.prefixes)

    def covers(self, pattern: str) -> bool:
        """Whether every namespace `pattern` matches is one of these."""
        if pattern.endswith("*"):
            return any(pattern[:-1].startswith(prefix) for prefix in self.prefixes)
        return self.allows(pattern)

    def patterns(self) -> list[str]:
        """As they were given: namespaces, and prefixes with their '*'."""
        return sorted(self.exact) + [f"{prefix}*" for prefix in self.prefixes]

    def check(self, namespace: str) -> None:
        """Raise Forbidden (403) unless the caller may use `namespace`: the caller named it,
        so saying it is not theirs leaks nothing."""
        if not self.allows(namespace):
            raise Forbidden(
                f"this key has no access to namespace {namespace!r}", {"namespace": namespace}
            )

    def clause(self, column: ColumnElement[str]) -> ColumnElement[bool]:
        """The SQL condition `column` is one of these namespaces (for reads by id and lists,
        where a namespace that is not the caller's must look like nothing at all)."""
        if self.everything:
            return true()
        conditions: list[ColumnElement[bool]] = [
            func.starts_with(column, prefix) for prefix in self.prefixes
        ]
        if self.exact:
            conditions.append(column.in_(sorted(self.exact)))
        return or_(*conditions) if conditions else false()


EVERY_NAMESPACE = Namespaces(exact=frozenset(), prefixes=("",))


@dataclass(frozen=True)
class Actor:
    key_id: UUID | None = None
    key_name: str | None = None

    def columns(self, *actions: str) -> dict[str, Any]:
        """The audit columns of `actions` ("created", "updated") for this actor."""
        values: dict[str, Any] = {}
        for action in actions:
            values[f"{action}_by_key_id"] = self.key_id
            values[f"{action}_by_key_name"] = self.key_name
        return values


NOBODY = Actor()
