"""HTML to the text the chunker reads (`html_to_text`): paragraphs, headings and lists kept
as plain-text structure, markup and hidden content dropped. Standard library only."""

import re
from html.parser import HTMLParser

# HTML: elements that end a paragraph, and elements whose content is never text.
_BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "body", "caption", "dd", "details"),
        *("dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form"),
        *("header", "hgroup", "hr", "html", "legend", "li", "main", "nav", "ol", "p", "pre"),
        *("section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul"),
    }
)
_HIDDEN_TAGS = frozenset({"script", "style", "noscript", "template", "svg"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_SPACES = re.compile(r"[^\S\n]+")


def html_to_text(html: str) -> tuple[str, str | None]:
    """(text, title) of an HTML page: blocks as blank-line-separated paragraphs, headings as
    `#` lines, entities decoded, head/script/style content dropped (`<title>` is the title,
    else the first `<h1>`), `<pre>` kept verbatim, `<br>` a line break, `<li>` a `- ` line."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    parser.flush()
    return "\n\n".join(parser.blocks), parser.title or parser.first_h1


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.title: str | None = None
        self.first_h1: str | None = None
        self._parts: list[str] = []
        self._prefix = ""  # "- " or "## ": written before the next block that has text
        self._in_head = False
        self._hidden = 0
        self._pre = 0
        self._heading = False
        self._title_parts: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self.title is None and not self._hidden:
            self._title_parts = []  # a <title> inside <svg> does not name the page
        elif tag in ("head", "body"):
            self._in_head = tag == "head"  # an unclosed <head> ends where <body> starts
        elif tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif self._hidden or self._in_head:
            return
        elif tag == "br":
            self._parts.append(" " if self._heading else "\n")
        elif tag in _HEADINGS or tag in _BLOCK_TAGS:
            self.flush()
            self._heading = tag in _HEADINGS
            self._pre += tag == "pre"
            if tag in _HEADINGS:
                self._prefix = "#" * _HEADINGS[tag] + " "
            elif tag == "li":
                self._prefix = "- "
        elif tag in ("td", "th"):
            self._parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title_parts is not None:
            self.title = " ".join("".join(self._title_parts).split()) or None
            self._title_parts = None
        elif tag == "head":
            self._in_head = False
        elif tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif self._hidden or self._in_head:
            return
        elif tag in _HEADINGS or tag in _BLOCK_TAGS:
            self.flush()
            self._pre = max(0, self._pre - (tag == "pre"))
            self._heading = False
            self._prefix = ""

    def handle_data(self, data: str) -> None:
        if self._title_parts is not None:
            self._title_parts.append(data)
        elif not (self._hidden or self._in_head):
            self._parts.append(data if self._pre else data.replace("\n", " "))

    def flush(self) -> None:
        """End the current block: appended (after the pending prefix) when it holds text."""
        raw, self._parts = "".join(self._parts), []
        if self._pre:
            text = raw.strip("\n").rstrip()
        else:
            lines = (_SPACES.sub(" ", line).strip() for line in raw.split("\n"))
            text = "\n".join(line for line in lines if line)
        if not text.strip():
            return
        if self._prefix == "# " and self.first_h1 is None:
            self.first_h1 = text
        self.blocks.append(self._prefix + text)
        self._prefix = ""
