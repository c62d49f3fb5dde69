"""Loaders over real small files in tests/documents/data, and over files built in tmp_path."""

import io
import os
from pathlib import Path

import pytest

from memory_service.documents.loaders import (
    LoadedDocument,
    LoaderError,
    iter_documents,
    iter_files,
    iter_stream,
    load_path,
    load_stream,
)

DATA = Path(__file__).parent / "data"


def uri(path: Path) -> str:
    return path.resolve().as_uri()


def only(documents: list[LoadedDocument]) -> LoadedDocument:
    assert len(documents) == 1
    return documents[0]


def errors(paths: list[Path]) -> list[LoaderError]:
    return [item for item in iter_documents(paths) if isinstance(item, LoaderError)]


class TestTextLoader:
    def test_keeps_text_and_names_it_after_the_file(self) -> None:
        document = only(list(load_path(DATA / "notes.txt")))
        assert document == LoadedDocument(
            source_uri=uri(DATA / "notes.txt"),
            title="notes",
            text="Plain notes.\nSecond line with CRLF.\n",
            metadata={},
        )

    def test_normalizes_newlines_and_drops_a_bom(self, tmp_path: Path) -> None:
        path = tmp_path / "windows.txt"
        path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n")
        assert only(list(load_path(path))).text == "one\ntwo\nthree\n"

    def test_an_empty_file_is_still_a_document(self, tmp_path: Path) -> None:
        (tmp_path / "empty.txt").write_text("  \n\n")
        assert only(list(load_path(tmp_path / "empty.txt"))).text == "  \n\n"


class TestMarkdownLoader:
    def test_title_is_the_first_level_one_heading(self) -> None:
        document = only(list(load_path(DATA / "guide.md")))
        assert document.title == "Field Guide to Tide Pools"
        assert document.source_uri == uri(DATA / "guide.md")
        assert document.text == (DATA / "guide.md").read_text()
        assert document.metadata == {}

    def test_title_falls_back_to_the_stem(self, tmp_path: Path) -> None:
        (tmp_path / "release-notes.md").write_text("## Only a subheading\n\nText.\n")
        assert only(list(load_path(tmp_path / "release-notes.md"))).title == "release-notes"

    def test_a_hash_inside_a_code_fence_is_not_the_title(self, tmp_path: Path) -> None:
        (tmp_path / "code.md").write_text("```sh\n# not a title\n```\n\n# Real Title #\n")
        assert only(list(load_path(tmp_path / "code.md"))).title == "Real Title"


class TestHtmlLoader:
    def test_extracts_text_headings_and_title(self) -> None:
        document = only(list(load_path(DATA / "page.html")))
        assert document.title == "Café & Bakery Hours"
        assert document.source_uri == uri(DATA / "page.html")
        assert document.text == (
            "Home\n\n"
            "# Opening hours\n\n"
            "We open at 7 am — croissants are <warm> by 8.\n\n"
            "Closed on\npublic holidays.\n\n"
            "## Menu\n\n"
            "- Espresso €2\n\n"
            "- Pain au chocolat €3\n\n"
            "  table 1\n    table 2"
        )

    def test_drops_scripts_styles_head_and_comments(self) -> None:
        text = only(list(load_path(DATA / "page.html"))).text
        for hidden in ("HIDDEN", "color", "secret", "charset", "comment", "Bakery"):
            assert hidden not in text

    def test_title_falls_back_to_the_first_h1_then_the_stem(self, tmp_path: Path) -> None:
        assert only(list(load_path(DATA / "nested" / "more.htm"))).title == "Nested"
        (tmp_path / "bare.html").write_text("<p>no heading<svg><title>icon</title></svg></p>")
        document = only(list(load_path(tmp_path / "bare.html")))
        assert (document.title, document.text) == ("bare", "no heading")

    def test_an_unclosed_head_ends_at_the_body(self, tmp_path: Path) -> None:
        (tmp_path / "sloppy.html").write_text("<head><title>T</title><body><p>Seen</p>")
        document = only(list(load_path(tmp_path / "sloppy.html")))
        assert (document.title, document.text) == ("T", "Seen")


class TestJsonlLoader:
    def test_one_document_per_line_with_metadata(self) -> None:
        base = uri(DATA / "records.jsonl")
        assert list(load_path(DATA / "records.jsonl")) == [
            LoadedDocument(
                source_uri=f"{base}#faq-1",
                title="Returns",
                text="Items can be returned within 30 days.",
                metadata={"lang": "en", "tags": ["policy"]},
            ),
            LoadedDocument(
                source_uri=f"{base}#3",  # no id: the line number (line 2 is blank)
                title=None,
                text="Shipping takes three to five days.",
                metadata={"source": "handbook", "page": 12},
            ),
            LoadedDocument(
                source_uri=f"{base}#7",
                title=None,
                text="Gift cards never expire.",
                metadata={"lang": "en", "score": 0.5},  # the explicit metadata object wins
            ),
        ]

    def test_ids_are_percent_encoded(self, tmp_path: Path) -> None:
        (tmp_path / "ids.jsonl").write_text('{"id": "a b/c#d", "text": "x"}\n')
        document = only(list(load_path(tmp_path / "ids.jsonl")))
        assert document.source_uri == uri(tmp_path / "ids.jsonl") + "#a%20b%2Fc%23d"

    def test_bad_lines_are_errors_naming_the_line_and_the_rest_loads(self, tmp_path: Path) -> None:
        path = tmp_path / "mixed.jsonl"
        lines = [
            '{"text": "good one"}',
            '{"text": "truncated',
            '{"title": "no text here"}',
            '["not", "an", "object"]',
            '{"text": 42}',
            '{"text": "dup", "id": "1"}',
            '{"text": "nan", "score": NaN}',
            '{"text": "bad metadata", "metadata": [1]}',
            '{"content": "last good one"}',
        ]
        path.write_text("\n".join(lines) + "\n")
        items = list(iter_documents([path]))
        documents = [item for item in items if isinstance(item, LoadedDocument)]
        failures = [item for item in items if isinstance(item, LoaderError)]
        assert [document.text for document in documents] == ["good one", "last good one"]
        assert [failure.line for failure in failures] == [2, 3, 4, 5, 6, 7, 8]
        assert all(failure.source_uri == uri(path) for failure in failures)
        messages = [failure.message for failure in failures]
        assert messages[0].startswith("line 2: invalid JSON")
        assert messages[1] == 'line 3: missing "text" (or "content") field'
        assert "duplicate document id #1" in messages[4]
        assert "NaN" in messages[5]

    def test_load_path_raises_the_first_error(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.jsonl"
        path.write_text('{"text": "fine"}\n{"body": "no text"}\n')
        loaded = load_path(path)
        assert next(loaded).text == "fine"
        with pytest.raises(LoaderError, match=r"line 2: missing \"text\"") as caught:
            next(loaded)
        assert caught.value.line == 2

    def test_bad_utf8_fails_only_its_own_line(self, tmp_path: Path) -> None:
        path = tmp_path / "bytes.jsonl"
        path.write_bytes(b'{"text": "ok"}\r\n{"text": "caf\xe9"}\n{"text": "also ok"}\n')
        items = list(iter_documents([path]))
        assert [type(item) for item in items] == [LoadedDocument, LoaderError, LoadedDocument]
        failure = items[1]
        assert isinstance(failure, LoaderError)
        assert failure.line == 2
        assert "not valid UTF-8" in failure.message


class TestErrors:
    def test_bad_utf8_in_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.md"
        path.write_bytes("# Café\n".encode("latin-1"))
        with pytest.raises(LoaderError, match="not valid UTF-8") as caught:
            list(load_path(path))
        assert caught.value.source_uri == uri(path)

    def test_an_unsupported_file_named_explicitly(self, tmp_path: Path) -> None:
        (tmp_path / "table.csv").write_text("a,b\n")
        with pytest.raises(LoaderError, match=r"unsupported file type '\.csv'"):
            list(load_path(tmp_path / "table.csv"))

    def test_a_missing_path(self, tmp_path: Path) -> None:
        with pytest.raises(LoaderError, match="no such file or directory"):
            list(load_path(tmp_path / "nowhere.txt"))

    def test_errors_do_not_stop_other_files(self, tmp_path: Path) -> None:
        (tmp_path / "a.txt").write_bytes(b"\xff\xfe broken")
        (tmp_path / "b.txt").write_text("fine")
        items = list(iter_documents([tmp_path, tmp_path / "missing.md"]))
        assert [type(item) for item in items] == [LoaderError, LoadedDocument, LoaderError]
        assert [e.source_uri for e in errors([tmp_path])] == [uri(tmp_path / "a.txt")]


class TestFolders:
    def test_recurses_in_name_order_and_only_known_suffixes(self) -> None:
        assert [document.source_uri for document in load_path(DATA)] == [
            uri(DATA / "guide.md"),
            uri(DATA / "nested" / "deeper" / "deep.txt"),
            uri(DATA / "nested" / "more.htm"),
            uri(DATA / "notes.txt"),
            uri(DATA / "page.html"),
            *(uri(DATA / "records.jsonl") + fragment for fragment in ("#faq-1", "#3", "#7")),
        ]

    def test_symlink_loops_and_duplicates_are_safe(self, tmp_path: Path) -> None:
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "a.md").write_text("# A\n")
        os.symlink(tmp_path / "docs", tmp_path / "docs" / "loop")
        os.symlink(tmp_path / "docs" / "a.md", tmp_path / "docs" / "b.md")
        documents = list(iter_documents([tmp_path / "docs", tmp_path / "docs" / "a.md"]))
        assert documents == [LoadedDocument(uri(tmp_path / "docs" / "a.md"), "A", "# A\n", {})]

    def test_hidden_entries_are_skipped_unless_named(self, tmp_path: Path) -> None:
        (tmp_path / ".git").mkdir()
        (tmp_path / ".git" / "notes.md").write_text("internal")
        (tmp_path / ".draft.md").write_text("draft")
        (tmp_path / "shown.md").write_text("shown")
        assert [document.text for document in load_path(tmp_path)] == ["shown"]
        assert [document.text for document in load_path(tmp_path / ".draft.md")] == ["draft"]

    def test_iter_files_lists_what_load_path_reads(self, tmp_path: Path) -> None:
        assert list(iter_files(DATA)) == [
            (DATA / name).resolve()
            for name in [
                *("guide.md", "nested/deeper/deep.txt", "nested/more.htm"),
                *("notes.txt", "page.html", "records.jsonl"),
            ]
        ]
        assert list(iter_files(tmp_path / "missing")) == []

    def test_an_empty_folder_yields_nothing(self, tmp_path: Path) -> None:
        assert list(iter_documents([tmp_path])) == []


class TestStreams:
    def test_markdown_from_stdin(self) -> None:
        stream = io.StringIO("\ufeff# Piped\r\n\r\nBody text.\r\n")
        document = only(list(load_stream(stream, "md")))
        assert document == LoadedDocument("stdin", "Piped", "# Piped\n\nBody text.\n", {})

    def test_txt_and_html_streams_use_the_given_name(self) -> None:
        text = only(list(load_stream(io.StringIO("hello"), "txt", name="clipboard")))
        assert (text.source_uri, text.title) == ("clipboard", None)
        page = only(list(load_stream(io.StringIO("<title>T</title><p>a &amp; b</p>"), "html")))
        assert (page.title, page.text) == ("T", "a & b")

    def test_jsonl_from_stdin(self) -> None:
        stream = io.StringIO('{"id": "x", "text": "one"}\n\n{"text": "two", "k": 1}\n{}\n')
        items = list(iter_stream(stream, "jsonl"))
        assert items[:2] == [
            LoadedDocument("stdin#x", None, "one", {}),
            LoadedDocument("stdin#3", None, "two", {"k": 1}),
        ]
        assert isinstance(items[2], LoaderError) and items[2].line == 4

    def test_undecodable_stream(self) -> None:
        stream = io.TextIOWrapper(io.BytesIO(b'{"text": "a"}\n\xff\xff\n'), encoding="utf-8")
        items = list(iter_stream(stream, "jsonl", name="pipe"))
        assert isinstance(items[-1], LoaderError)
        assert items[-1].source_uri == "pipe"
        assert "not valid UTF-8" in items[-1].message

    def test_unknown_format_is_refused_at_the_call(self) -> None:
        with pytest.raises(ValueError, match="unsupported format 'pdf'"):
            load_stream(io.StringIO(""), "pdf")
