"""Token-aware chunking with the embedder's own tokenizer.

`chunk_text` cuts a document into chunks of at most `max_tokens` tokens as counted by the
caller's `count_tokens` (the embedder's tokenizer, special tokens included), so no chunk is
ever truncated by the model. The algorithm:

1. Split hierarchically, one level at a time, only what does not fit: markdown sections
   (a line `#`..`######` followed by a space starts one; not inside ``` or ~~~ fences), then
   paragraphs (blank lines), then sentences (terminal punctuation, maybe closing quotes,
   then whitespace; or an ideographic full stop), then lines (hard-wrapped prose, lists and
   code without punctuation), then words (whitespace), then characters (a "word" such as a
   URL, a hash or minified code is cut into parts until each fits). A bare heading line is
   glued to what follows it, so a chunk never ends on a heading. Every level's new pieces
   are counted in one `count_tokens` call.
2. Pack: consecutive pieces that fit are packed greedily up to `max_tokens - overlap_tokens`
   (room for the overlap), their estimated count being the sum of their content tokens plus
   one set of special tokens. The pieces of a split unit
   are packed among themselves, so a chunk spans a section or paragraph boundary only when
   the whole units on both sides fit in it.
3. Overlap: a chunk starts with about `overlap_tokens` tokens of the previous chunk's tail,
   in whole words, and in whole sentences when a sentence start falls inside that tail. A
   chunk that opens a markdown section gets no overlap: there is nothing to continue.
4. Verify: every chunk text is counted for real (one call); a chunk over budget (possible
   because tokenization is not additive, e.g. across the cut inside a word) loses its
   overlap, then is split in two, until all fit. `token_count` is that real count.

Contracts: chunk texts are substrings of the input with "\\r\\n" made "\\n" and their ends
stripped (inner whitespace and newlines are kept), in document order, `ordinal` from 0; every
non-whitespace character of the input is in at least one chunk; the same input gives the
same chunks. Whitespace-only input gives no chunks.
"""

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CountTokens = Callable[[Sequence[str]], list[int]]
Span = tuple[int, int]


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    token_count: int


@dataclass
class _Piece:
    """A span of the text, its real token count, and its parts when it did not fit."""

    start: int
    end: int
    tokens: int
    parts: list["_Piece"] = field(default_factory=list)


@dataclass
class _Plan:
    """A chunk to be: its pieces, and where it starts once overlap is added."""

    pieces: list[_Piece]
    start: int

    @property
    def end(self) -> int:
        return self.pieces[-1].end


class _Counter:
    """`count_tokens` plus the overhead every count includes (special tokens)."""

    def __init__(self, count_tokens: CountTokens, text: str) -> None:
        self._count = count_tokens
        self.text = text
        self.overhead = self([""])[0]

    def __call__(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        counts = self._count(texts)
        if len(counts) != len(texts):
            raise ValueError(f"count_tokens returned {len(counts)} counts for {len(texts)} texts")
        return counts

    def pieces(self, spans: Sequence[Span]) -> list[_Piece]:
        counts = self([self.text[start:end] for start, end in spans])
        return [_Piece(start, end, n) for (start, end), n in zip(spans, counts, strict=True)]


def chunk_text(
    text: str, count_tokens: CountTokens, *, max_tokens: int, overlap_tokens: int = 0
) -> list[Chunk]:
    """Chunks of `text`, each at most `max_tokens` as counted by `count_tokens` (which maps
    texts to their token counts, special tokens included). Raises ValueError unless
    `max_tokens` exceeds the special-token overhead (`count_tokens([""])[0]`) and
    0 <= `overlap_tokens` < `max_tokens` - overhead."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    counter = _Counter(count_tokens, text)
    budget = max_tokens - counter.overhead
    if budget <= 0:
        raise ValueError(f"max_tokens={max_tokens} leaves no room after the special tokens")
    if not 0 <= overlap_tokens < budget:
        raise ValueError(f"overlap_tokens must be >= 0 and < {budget} (max_tokens - overhead)")
    root_span = _strip(text, 0, len(text))
    if root_span is None:
        return []
    (root,) = counter.pieces([root_span])
    _split(root, counter, max_tokens)
    groups = _pack(root, counter, max_tokens - overlap_tokens)
    plans = [_Plan(pieces, pieces[0].start) for pieces in groups]
    if overlap_tokens:
        _add_overlap(plans, counter, max_tokens, overlap_tokens)
    return _verified(plans, counter, max_tokens)


def _strip(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _spans_between(text: str, start: int, end: int, cuts: Sequence[Span]) -> list[Span]:
    """The stripped, non-empty spans of text[start:end] around the (sorted) cut spans."""
    spans, position = [], start
    for cut_start, cut_end in [*cuts, (end, end)]:
        if (span := _strip(text, position, cut_start)) is not None:
            spans.append(span)
        position = cut_end
    return spans


_HEADING = re.compile(r"#{1,6}(?:[ \t\n]|$)")
_FENCE = re.compile(r" {0,3}(?:```|~~~)")
_BLANK_LINES = re.compile(r"\n[^\S\n]*\n\s*")
# Terminal marks (with the ideographic full stop, exclamation and question marks), and the
# closing quotes and brackets that may follow them.
_ENDS, _CLOSERS = r"[.!?\u2026]", r"[\"'\u201d\u2019)\]]*"
_CJK_ENDS = r"[\u3002\uff01\uff1f]"
_SENTENCE_GAP = re.compile(rf"(?<={_ENDS}){_CLOSERS}(\s+)|(?<={_CJK_ENDS})(\s*)")
_LINE_BREAK = re.compile(r"[^\S\n]*\n\s*")
_WORD = re.compile(r"\S+")
# What precedes a sentence start: a terminal mark (maybe closers) and space, or a blank line.
_SENTENCE_BEFORE = re.compile(rf"(?:{_ENDS}{_CLOSERS}\s+|{_CJK_ENDS}\s*|\n[^\S\n]*\n\s*)\Z")


def _is_heading_line(text: str, span: Span) -> bool:
    start, end = span
    return "\n" not in text[start:end] and _HEADING.match(text, start, end) is not None


def _glue_headings(text: str, spans: list[Span]) -> list[Span]:
    """Spans where bare heading lines are joined to the span that follows them."""
    glued: list[Span] = []
    after_heading = False
    for span in spans:
        if after_heading:
            glued[-1] = (glued[-1][0], span[1])
        else:
            glued.append(span)
        after_heading = _is_heading_line(text, span)
    return glued


def _sections(text: str, start: int, end: int) -> list[Span]:
    cuts, in_fence, position = [], False, start
    while position < end:
        line_end = text.find("\n", position, end)
        line_end = end if line_end == -1 else line_end
        if _FENCE.match(text, position, line_end):
            in_fence = not in_fence
        elif not in_fence and position > start and _HEADING.match(text, position, line_end):
            cuts.append((position, position))
        position = line_end + 1
    return _glue_headings(text, _spans_between(text, start, end, cuts))


def _paragraphs(text: str, start: int, end: int) -> list[Span]:
    cuts = [match.span() for match in _BLANK_LINES.finditer(text, start, end)]
    return _glue_headings(text, _spans_between(text, start, end, cuts))


def _sentences(text: str, start: int, end: int) -> list[Span]:
    cuts = []
    for match in _SENTENCE_GAP.finditer(text, start, end):
        group = 1 if match[1] is not None else 2
        cuts.append(match.span(group))
    return _glue_headings(text, _spans_between(text, start, end, cuts))


def _lines(text: str, start: int, end: int) -> list[Span]:
    cuts = [match.span() for match in _LINE_BREAK.finditer(text, start, end)]
    return _glue_headings(text, _spans_between(text, start, end, cuts))


def _words(text: str, start: int, end: int) -> list[Span]:
    return [match.span() for match in _WORD.finditer(text, start, end)]


_LEVELS: tuple[Callable[[str, int, int], list[Span]], ...] = (
    _sections,
    _paragraphs,
    _sentences,
    _lines,
    _words,
)


def _split(root: _Piece, counter: _Counter, max_tokens: int) -> None:
    """Give every piece over budget, from `root` down, parts that each fit (or are split)."""
    over = [root] if root.tokens > max_tokens else []
    for level in _LEVELS:
        over = _split_level(over, counter, max_tokens, level)
    while over:
        over = _split_level(over, counter, max_tokens, None)


def _split_level(
    over: list[_Piece],
    counter: _Counter,
    max_tokens: int,
    level: Callable[[str, int, int], list[Span]] | None,
) -> list[_Piece]:
    """Split each piece at `level` (None: by characters), counting all new parts in one
    call; returns the new parts still over budget and the pieces this level left whole."""
    whole, split = [], []
    for piece in over:
        if level is None:
            spans = _char_spans(piece, counter, max_tokens)
        else:
            spans = level(counter.text, piece.start, piece.end)
        if spans == [(piece.start, piece.end)]:
            whole.append(piece)
        else:
            split.append((piece, spans))
    parts = iter(counter.pieces([span for _, spans in split for span in spans]))
    for piece, spans in split:
        piece.parts = [next(parts) for _ in spans]
    return whole + [part for piece, _ in split for part in piece.parts if part.tokens > max_tokens]


def _char_spans(piece: _Piece, counter: _Counter, max_tokens: int) -> list[Span]:
    """Near-equal character cuts of a piece that has no whitespace left to split on, each
    worth about a quarter of the budget so that packing can refill chunks (a cut that does
    not fit is cut again)."""
    length = piece.end - piece.start
    if length == 1:
        raise ValueError(
            f"max_tokens={max_tokens} cannot hold the single character at {piece.start}"
        )
    ratio = (piece.tokens - counter.overhead) / (max_tokens - counter.overhead)
    count = min(length, max(2, math.ceil(ratio * 4)))
    bounds = [piece.start + length * index // count for index in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _pack(piece: _Piece, counter: _Counter, budget: int) -> list[list[_Piece]]:
    """Greedy groups of consecutive parts within `budget` (a part alone may exceed it, not
    `max_tokens`); the parts of a split part are packed on their own."""
    if not piece.parts:
        return [[piece]]
    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    for part in piece.parts:
        if part.parts:
            groups.extend([current] if current else [])
            groups.extend(_pack(part, counter, budget))
            current = []
        elif current and _estimate([*current, part], counter) > budget:
            groups.append(current)
            current = [part]
        else:
            current.append(part)
    groups.extend([current] if current else [])
    return groups


def _estimate(pieces: Sequence[_Piece], counter: _Counter) -> int:
    return sum(piece.tokens - counter.overhead for piece in pieces) + counter.overhead


def _add_overlap(plans: list[_Plan], counter: _Counter, max_tokens: int, overlap: int) -> None:
    """Start each plan (but one opening a section) inside the previous one: at the earliest
    of its last words that total at most `overlap` tokens and leave the plan within budget,
    moved forward to a sentence start when one falls inside that tail."""
    text = counter.text
    tails: list[list[Span]] = []
    for previous, plan in itertools.pairwise(plans):
        opens_section = _HEADING.match(text, plan.start) is not None
        words = [] if opens_section else _words(text, previous.pieces[0].start, previous.end)
        tails.append(words[-overlap:])
    counts = iter(counter([text[start:end] for tail in tails for start, end in tail]))
    for plan, tail in zip(plans[1:], tails, strict=True):
        tail_counts = [next(counts) for _ in tail]
        room = min(overlap, max_tokens - _estimate(plan.pieces, counter))
        start = plan.start
        for (word_start, _), tokens in zip(reversed(tail), reversed(tail_counts), strict=True):
            room -= tokens - counter.overhead
            if room < 0:
                break
            start = word_start
        plan.start = _sentence_start(text, start, plan.start)


def _sentence_start(text: str, start: int, end: int) -> int:
    """`start` if a sentence starts there, else the first sentence start in text[start:end],
    else `start` (the overlap then begins mid-sentence, on a word)."""
    if start == end or start == 0 or _SENTENCE_BEFORE.search(text, max(0, start - 64), start):
        return start
    gap = _SENTENCE_GAP.search(text, start, end)
    after = None if gap is None else _strip(text, gap.end(), end)
    return start if after is None else after[0]


def _verified(plans: list[_Plan], counter: _Counter, max_tokens: int) -> list[Chunk]:
    """Chunks with their real counts; a plan over budget loses its overlap, else is split."""
    text = counter.text
    settled: list[tuple[_Plan, int]] = []
    pending = plans
    while pending:
        counts = counter([text[plan.start : plan.end] for plan in pending])
        retry: list[_Plan] = []
        for plan, tokens in zip(pending, counts, strict=True):
            own_start = plan.pieces[0].start
            if tokens <= max_tokens:
                settled.append((plan, tokens))
            elif plan.start < own_start:
                retry.append(_Plan(plan.pieces, own_start))
            elif len(plan.pieces) > 1:
                first, second = (
                    plan.pieces[: len(plan.pieces) // 2],
                    plan.pieces[len(plan.pieces) // 2 :],
                )
                retry += [_Plan(first, own_start), _Plan(second, second[0].start)]
            else:
                raise ValueError("count_tokens gave two counts for the same text")
        pending = retry
    settled.sort(key=lambda item: (item[0].pieces[0].start, item[0].end))
    return [
        Chunk(ordinal, text[plan.start : plan.end], tokens)
        for ordinal, (plan, tokens) in enumerate(settled)
    ]
