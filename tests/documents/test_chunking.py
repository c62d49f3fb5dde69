"""Chunking measured with the real tokenizer of the bundled model (all-MiniLM-L6-v2)."""

import itertools
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from memory_service.documents.chunking import Chunk, CountTokens, chunk_text
from memory_service.providers.local import LocalProvider

README = Path(__file__).parents[2] / "README.md"
GUIDE = Path(__file__).parent / "data" / "guide.md"
TOPICS = ["tide pools", "harbour seals", "kelp forests", "sea urchins", "salt marshes"]


class CountingTokens:
    """The tokenizer's count, recording how many calls were made."""

    def __init__(self, count: CountTokens) -> None:
        self._count = count
        self.calls = 0

    def __call__(self, texts: Sequence[str]) -> list[int]:
        self.calls += 1
        return self._count(texts)


@pytest.fixture(scope="session")
def count_tokens(local_provider: LocalProvider) -> CountTokens:
    tokenizer = local_provider._model.tokenizer

    def count(texts: Sequence[str]) -> list[int]:
        encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    return count


def sentence(number: int) -> str:
    """A distinct sentence of about a dozen tokens."""
    return f"Note {number} says the {TOPICS[number % len(TOPICS)]} changed after the storm."


def located(text: str, chunks: list[Chunk]) -> list[int]:
    """Where each chunk starts in the text (chunks are in order and may overlap). Searching
    from just after the previous start is ambiguous in repetitive text: tests avoid it."""
    normalized, starts, position = text.replace("\r\n", "\n"), [], 0
    for chunk in chunks:
        start = normalized.find(chunk.text, position)
        assert start >= 0, f"chunk {chunk.ordinal} is not a substring of the text in order"
        starts.append(start)
        position = start + 1
    return starts


def shared_words(previous: Chunk, chunk: Chunk) -> str:
    """The longest run of words that ends `previous` and starts `chunk`: the overlap."""
    before, after = previous.text.split(), chunk.text.split()
    shared = max(k for k in range(len(after) + 1) if k == 0 or before[-k:] == after[:k])
    return " ".join(after[:shared])


def assert_valid(text: str, chunks: list[Chunk], count: CountTokens, max_tokens: int) -> None:
    """Chunk contract: real counts within budget, ordinals, stripped ends, nothing lost."""
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    assert [chunk.token_count for chunk in chunks] == count([chunk.text for chunk in chunks])
    assert all(chunk.token_count <= max_tokens for chunk in chunks)
    assert all(chunk.text == chunk.text.strip() and chunk.text for chunk in chunks)
    normalized, covered = text.replace("\r\n", "\n"), set[int]()
    for chunk, start in zip(chunks, located(text, chunks), strict=True):
        covered.update(range(start, start + len(chunk.text)))
    lost = [i for i, char in enumerate(normalized) if not char.isspace() and i not in covered]
    assert lost == [], f"characters dropped at {lost[:10]}"


class TestChunkText:
    def test_a_short_text_is_one_stripped_chunk(self, count_tokens: CountTokens) -> None:
        chunks = chunk_text("\n  Hello there,\r\n  world.  \n\n", count_tokens, max_tokens=32)
        assert chunks == [Chunk(0, "Hello there,\n  world.", 7)]

    def test_whitespace_only_gives_no_chunks(self, count_tokens: CountTokens) -> None:
        assert chunk_text(" \n\t\n ", count_tokens, max_tokens=32) == []
        assert chunk_text("", count_tokens, max_tokens=32) == []

    def test_sections_are_chunks_when_they_fit(self, count_tokens: CountTokens) -> None:
        sections = [
            f"## Part {part}\n\n" + " ".join(sentence(part * 3 + i) for i in range(3))
            for part in range(4)
        ]
        sizes = count_tokens(sections)
        assert max(sizes) <= 64 < min(a + b - 2 for a, b in itertools.pairwise(sizes))
        text = "\n\n".join(sections)
        for overlap in (0, 8):  # a chunk that opens a section gets no overlap
            chunks = chunk_text(text, count_tokens, max_tokens=64, overlap_tokens=overlap)
            assert [chunk.text for chunk in chunks] == sections

    def test_small_sections_share_a_chunk(self, count_tokens: CountTokens) -> None:
        text = "# One\n\nFirst.\n\n# Two\n\nSecond.\n\n# Three\n\n" + " ".join(
            map(sentence, range(8))
        )
        chunks = chunk_text(text, count_tokens, max_tokens=64)
        assert chunks[0].text == "# One\n\nFirst.\n\n# Two\n\nSecond."
        assert chunks[1].text.startswith("# Three\n\nNote 0")
        assert_valid(text, chunks, count_tokens, 64)

    def test_paragraphs_are_chunks_when_they_fit(self, count_tokens: CountTokens) -> None:
        paragraphs = [" ".join(sentence(p * 3 + i) for i in range(3)) for p in range(4)]
        text = "# Notes\n\n" + "\n\n".join(paragraphs)
        chunks = chunk_text(text, count_tokens, max_tokens=64)
        # The bare heading is glued to its first paragraph.
        assert [chunk.text for chunk in chunks] == ["# Notes\n\n" + paragraphs[0], *paragraphs[1:]]

    def test_sentences_are_kept_whole_when_they_fit(self, count_tokens: CountTokens) -> None:
        sentences = [sentence(i) for i in range(12)]
        # Hard-wrapped: line breaks inside sentences are not boundaries.
        text = " ".join(sentences).replace(" the storm", "\nthe storm")
        chunks = chunk_text(text, count_tokens, max_tokens=40)
        assert len(chunks) > 1
        assert [chunk.text for chunk in chunks] == [
            text[start : start + len(chunk.text)]
            for chunk, start in zip(chunks, located(text, chunks), strict=True)
        ]
        for chunk in chunks:
            assert chunk.text.startswith("Note ") and chunk.text.endswith("storm.")
        assert_valid(text, chunks, count_tokens, 40)

    def test_a_heading_never_ends_a_chunk(self, count_tokens: CountTokens) -> None:
        text = "# Title\n\n## Part\n\n" + " ".join(sentence(i) for i in range(20))
        chunks = chunk_text(text, count_tokens, max_tokens=48)
        assert chunks[0].text.startswith("# Title\n\n## Part\n\nNote 0")
        assert all(not chunk.text.split("\n")[-1].startswith("#") for chunk in chunks)
        assert_valid(text, chunks, count_tokens, 48)

    def test_an_overlong_word_is_split_not_dropped(self, count_tokens: CountTokens) -> None:
        word = "-".join(str(i) for i in range(300))  # one "word" of about 600 tokens
        text = f"Before it. {word} After it."
        chunks = chunk_text(text, count_tokens, max_tokens=32)
        assert chunks[0].text == "Before it." and chunks[-1].text == "After it."
        assert "".join(chunk.text for chunk in chunks[1:-1]) == word
        assert len(chunks) < 2 + 2 * 600 / 30  # the fragments are packed, not one per cut
        assert_valid(text, chunks, count_tokens, 32)

    def test_overlap_repeats_whole_sentences(self, count_tokens: CountTokens) -> None:
        text = " ".join(f"Step {i} is done." for i in range(30))  # 5 tokens a sentence
        chunks = chunk_text(text, count_tokens, max_tokens=48, overlap_tokens=12)
        assert len(chunks) > 2
        for previous, chunk in itertools.pairwise(chunks):
            overlap = shared_words(previous, chunk)
            assert overlap.startswith("Step ") and overlap.endswith(" is done.")
            assert count_tokens([overlap])[0] - 2 == 10  # two sentences; three would be 15
        assert_valid(text, chunks, count_tokens, 48)

    def test_overlap_falls_back_to_words(self, count_tokens: CountTokens) -> None:
        text = " ".join(sentence(i) for i in range(12))  # sentences longer than the overlap
        chunks = chunk_text(text, count_tokens, max_tokens=40, overlap_tokens=6)
        assert len(chunks) > 2
        for previous, chunk in itertools.pairwise(chunks):
            overlap = shared_words(previous, chunk)
            assert 0 < count_tokens([overlap])[0] - 2 <= 6
            assert not overlap.startswith("Note ")
        assert_valid(text, chunks, count_tokens, 40)

    def test_same_input_same_chunks(self, count_tokens: CountTokens) -> None:
        text = README.read_text()
        first = chunk_text(text, count_tokens, max_tokens=96, overlap_tokens=12)
        assert chunk_text(text, count_tokens, max_tokens=96, overlap_tokens=12) == first

    def test_no_words_are_lost(self, count_tokens: CountTokens) -> None:
        text = GUIDE.read_text()
        chunks = chunk_text(text, count_tokens, max_tokens=24)
        assert Counter(" ".join(chunk.text for chunk in chunks).split()) == Counter(text.split())
        assert_valid(text, chunks, count_tokens, 24)

    def test_code_fences_do_not_start_sections(self, count_tokens: CountTokens) -> None:
        chunks = chunk_text(GUIDE.read_text(), count_tokens, max_tokens=64)
        assert not any(chunk.text.startswith("# this comment") for chunk in chunks)
        assert any(chunk.text.startswith("## Who lives there") for chunk in chunks)

    def test_a_long_document(self, count_tokens: CountTokens) -> None:
        text = README.read_text()
        total = count_tokens([text])[0]
        assert total > 1000
        counting = CountingTokens(count_tokens)
        chunks = chunk_text(text, counting, max_tokens=128, overlap_tokens=16)
        assert_valid(text, chunks, count_tokens, 128)
        assert total / 128 < len(chunks) < total / 32
        assert counting.calls <= 10  # one per level, one for overlaps, one to verify

    def test_a_non_additive_tokenizer_still_gets_chunks_within_budget(self) -> None:
        def superadditive(texts: Sequence[str]) -> list[int]:
            # Joined texts cost more than their parts, so packing estimates run short.
            return [2 + len(text.split()) + len(text.split()) // 3 for text in texts]

        text = " ".join(sentence(i) for i in range(40))
        chunks = chunk_text(text, superadditive, max_tokens=30, overlap_tokens=4)
        assert_valid(text, chunks, superadditive, 30)

    def test_refuses_budgets_that_cannot_work(self, count_tokens: CountTokens) -> None:
        with pytest.raises(ValueError, match="no room after the special tokens"):
            chunk_text("text", count_tokens, max_tokens=2)
        with pytest.raises(ValueError, match="overlap_tokens"):
            chunk_text("text", count_tokens, max_tokens=10, overlap_tokens=8)
        with pytest.raises(ValueError, match="overlap_tokens"):
            chunk_text("text", count_tokens, max_tokens=10, overlap_tokens=-1)
