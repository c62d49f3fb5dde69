"""Ranking and reciprocal rank fusion, shared by `POST /v1/search` and memory recall.

Hybrid search is reciprocal rank fusion (RRF): a result's score is the sum, over the vector
and keyword rankings that hold it, of `1 / (rrf_k + rank)`, ranks counted from 1. RRF needs
no score calibration between cosine similarity and full-text rank, which live on unrelated scales.
Each ranking is fetched `max(4 * k, 20)` deep (`depth`): a result ranked just outside the
top k by both modes can still win on the sum, and 20 keeps small k from starving the
fusion; deeper lists cost index work and change the fused top k rarely.

The rows come from one statement (see `search.repository`) and say which ranking they
belong to (`ranked_by`); the same result may come twice, once per ranking, and `key`
identifies it across both.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from memory_service.memories.schemas import Explanation, SearchMode

# How deep each ranking is fetched for hybrid search: see the module docstring.
HYBRID_DEPTH_FACTOR = 4
HYBRID_MIN_DEPTH = 20


class Ranked(Protocol):
    """A row of a ranked list: which ranking it is in, its score there (higher is better),
    and what identifies the result across rankings."""

    @property
    def ranked_by(self) -> Literal["vector", "keyword"]: ...

    @property
    def score(self) -> float: ...

    @property
    def key(self) -> str: ...


RowT = TypeVar("RowT", bound=Ranked)


@dataclass
class Ranking:
    """One mode's ranking of a result (rank counts from 1)."""

    rank: int
    score: float


@dataclass
class Candidate(Generic[RowT]):
    row: RowT
    vector: Ranking | None = None
    keyword: Ranking | None = None
    fused: float | None = None

    def score(self, mode: SearchMode) -> float:
        """The score a client sees: the mode's own score, the fused one in hybrid mode."""
        chosen = {"vector": self.vector, "keyword": self.keyword}.get(mode)
        return chosen.score if chosen is not None else self.fused or 0.0

    def explanation(self) -> Explanation:
        return Explanation(
            vector_rank=self.vector.rank if self.vector else None,
            vector_score=self.vector.score if self.vector else None,
            keyword_rank=self.keyword.rank if self.keyword else None,
            keyword_score=self.keyword.score if self.keyword else None,
            fused_score=self.fused,
        )


# Hybrid's keyword list keeps rows holding two query terms (or every term of a shorter
# query). Among thousands of rows, a paraphrase's keyword list is otherwise full of rows
# that share one common word with it ("old", "user", all at the same rank), and rank fusion
# lifts such a row, when the vector list also has it lower down, above the vector list's
# right answer. Identifiers split into several lexemes ("ERR-4471-XQ": the whole, "err",
# "4471", "xq"), so an exact identifier still passes. Keyword mode keeps any-term matching.
HYBRID_KEYWORD_MIN_TERMS = 2


def keyword_min_terms(mode: SearchMode) -> int:
    """How many distinct query terms a row needs to enter the keyword list in `mode`."""
    return HYBRID_KEYWORD_MIN_TERMS if mode == "hybrid" else 1


def depth(mode: SearchMode, k: int) -> int:
    """How many rows each ranked list fetches for a top-k answer in `mode`."""
    return max(HYBRID_DEPTH_FACTOR * k, HYBRID_MIN_DEPTH) if mode == "hybrid" else k


def rank(rows: Iterable[RowT], depth: int) -> list[Candidate[RowT]]:
    """One candidate per result, with its rank in each mode's merged ranking (top `depth`)."""
    rows = list(rows)
    candidates: dict[str, Candidate[RowT]] = {}
    for ranked_by in ("vector", "keyword"):
        ranked = sorted(
            (row for row in rows if row.ranked_by == ranked_by), key=lambda row: -row.score
        )
        for position, row in enumerate(ranked[:depth], start=1):
            candidate = candidates.setdefault(row.key, Candidate(row))
            setattr(candidate, ranked_by, Ranking(position, row.score))
    return list(candidates.values())


def order(
    candidates: Sequence[Candidate[RowT]], mode: SearchMode, rrf_k: int
) -> list[Candidate[RowT]]:
    """Best first. Hybrid: by fused score, ties to the better single rank, then by key."""
    if mode == "vector":
        found = [c for c in candidates if c.vector is not None]
        return sorted(found, key=lambda c: c.vector.rank if c.vector else 0)
    if mode == "keyword":
        found = [c for c in candidates if c.keyword is not None]
        return sorted(found, key=lambda c: c.keyword.rank if c.keyword else 0)
    for candidate in candidates:
        rankings = [r for r in (candidate.vector, candidate.keyword) if r is not None]
        candidate.fused = sum(1 / (rrf_k + ranking.rank) for ranking in rankings)

    def key(candidate: Candidate[RowT]) -> tuple[float, int, str]:
        best = min(r.rank for r in (candidate.vector, candidate.keyword) if r is not None)
        return (-(candidate.fused or 0.0), best, candidate.row.key)

    return sorted(candidates, key=key)


def fuse(rows: Iterable[RowT], mode: SearchMode, k: int, rrf_k: int) -> list[Candidate[RowT]]:
    """The top k results of `mode` from the rows of its ranked lists, best first."""
    return order(rank(rows, depth(mode, k)), mode, rrf_k)[:k]
