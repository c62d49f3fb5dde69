"""Token counting from the model's files: the same counts as the model, with no weights."""

import shutil
from pathlib import Path

import pytest

from memory_service.core.errors import InvalidRequest
from memory_service.providers.local import LocalProvider, bundled_model_path
from memory_service.providers.tokenizer import FileTokenizer, token_counter

TEXTS = [
    "",
    "Hello, world.",
    "Ünïcödé café naïve façade, Übergrößenträger.",
    "東京は日本の首都です。人口は約1400万人。",
    "emoji 🚀🔥 and   odd\twhitespace\n\nlines",
    "ERR-4471-XQ https://example.com/a/b?c=d&e=f#g 0xDEADBEEF",
    "A long text. " * 120,
]
# What transformers writes for a tokenizer without a length limit.
NO_LIMIT = '{"model_max_length": 1000000000000000019884624838656}'


def tokenizer_files(tmp_path: Path, *names: str) -> Path:
    """A folder holding only the named files of the bundled model's folder."""
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    for name in names:
        shutil.copy(bundled_model_path() / name, folder / name)
    return folder


class TestFileTokenizer:
    async def test_counts_and_window_are_the_models(
        self, local_provider: LocalProvider, tmp_path: Path
    ) -> None:
        folder = tokenizer_files(tmp_path, "tokenizer.json", "sentence_bert_config.json")
        tokenizer = FileTokenizer.load(folder)
        assert tokenizer.window == local_provider.window == 256
        counts = await tokenizer.count_tokens(TEXTS)
        assert counts == await local_provider.count_tokens(TEXTS)
        assert counts[0] == 2, "special tokens are counted"
        assert counts[-1] > 256, "never truncated to the window"
        assert await tokenizer.run_with_counter(lambda count: count(TEXTS)) == counts

    async def test_the_window_falls_back_to_the_tokenizer_config(self, tmp_path: Path) -> None:
        folder = tokenizer_files(tmp_path, "tokenizer.json", "tokenizer_config.json")
        (folder / "tokenizer_config.json").write_text('{"model_max_length": 384}')
        assert FileTokenizer.load(folder).window == 384

    @pytest.mark.parametrize(
        ("files", "config", "message"),
        [
            ((), None, "no tokenizer.json"),
            (("tokenizer.json",), None, "does not say the model's window"),
            (
                ("tokenizer.json",),
                '{"model_max_length": 1000000000000000019884624838656}',
                "window",
            ),
        ],
    )
    def test_a_folder_that_cannot_serve_is_refused_with_the_reason(
        self, tmp_path: Path, files: tuple[str, ...], config: str | None, message: str
    ) -> None:
        folder = tokenizer_files(tmp_path, *files)
        if config is not None:
            (folder / "tokenizer_config.json").write_text(config)
        with pytest.raises(InvalidRequest, match=message):
            FileTokenizer.load(folder)


class TestTokenCounter:
    async def test_counts_stay_whole_after_the_model_switched_truncation_on(
        self, local_provider: LocalProvider
    ) -> None:
        model = local_provider._model

        def after_embedding(_: object) -> tuple[object, list[int], list[int]]:
            # sentence-transformers leaves truncation to the window set in the model's own
            # Rust tokenizer once it has embedded something.
            model.encode([TEXTS[-1]])
            truncation = model.tokenizer.backend_tokenizer.truncation
            counted = token_counter(model.tokenizer)(TEXTS)
            # transformers' own call, which switches truncation off again first.
            wrapped = model.tokenizer(TEXTS, add_special_tokens=True, truncation=False)
            return truncation, counted, [len(ids) for ids in wrapped["input_ids"]]

        # On the model's worker thread: its tokenizer is never used from two threads.
        truncation, counted, expected = await local_provider.run_with_counter(after_embedding)
        assert truncation is not None
        assert counted == expected
        assert counted[-1] > local_provider.window
