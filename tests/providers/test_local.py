"""The bundled local provider: the real all-MiniLM-L6-v2, off the event loop."""

import numpy as np
import pytest

from memory_service.providers.errors import ProviderInputError, ProviderUnavailable
from memory_service.providers.local import LocalProvider


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class TestLocalProvider:
    def test_describes_its_space(self, local_provider: LocalProvider) -> None:
        assert local_provider.model_id == "all-MiniLM-L6-v2"
        assert local_provider.dimension == 384
        assert local_provider.normalized is True
        assert local_provider.window == 256

    async def test_embeds_in_order_across_batches(self, local_provider: LocalProvider) -> None:
        texts = [f"sentence number {i} about topic {i % 7}" for i in range(150)]
        vectors = await local_provider.embed(texts)
        assert vectors.shape == (150, 384)
        assert vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        single = await local_provider.embed([texts[97]])
        assert cosine(vectors[97], single[0]) > 0.9999

    async def test_empty_input(self, local_provider: LocalProvider) -> None:
        assert (await local_provider.embed([])).shape == (0, 384)

    async def test_meaning_is_closer_than_words(self, local_provider: LocalProvider) -> None:
        anchor, paraphrase, unrelated = await local_provider.embed(
            [
                "The meeting was moved to Thursday afternoon.",
                "We rescheduled the meeting for Thursday after lunch.",
                "Penguins cannot fly but swim very well.",
            ]
        )
        assert cosine(anchor, paraphrase) > 0.7
        assert cosine(anchor, unrelated) < 0.2

    async def test_counts_tokens_with_special_tokens(self, local_provider: LocalProvider) -> None:
        assert await local_provider.count_tokens(["hello world", ""]) == [4, 2]

    async def test_refuses_text_over_its_window_instead_of_truncating(
        self, local_provider: LocalProvider
    ) -> None:
        with pytest.raises(ProviderInputError) as caught:
            await local_provider.embed(["fine", "word " * 255])
        assert caught.value.index == 1
        exact = "word " * 254  # 254 tokens + [CLS] + [SEP] = the full window
        assert await local_provider.count_tokens([exact]) == [256]
        assert (await local_provider.embed([exact])).shape == (1, 384)

    async def test_a_folder_without_a_model_is_unavailable(self, tmp_path: object) -> None:
        from pathlib import Path

        assert isinstance(tmp_path, Path)
        with pytest.raises(ProviderUnavailable, match="no sentence-transformers model"):
            await LocalProvider.load(tmp_path)
