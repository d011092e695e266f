"""Markdown to safe HTML on the server: model output never becomes live HTML or script.

Raw HTML in the Markdown is escaped by the parser (html=False) and the result is sanitized
again by nh3 with a short allow-list, so a bug in either layer alone cannot ship an XSS.
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
    ["table", "strikethrough"]
)

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "pre",
    "code",
    "em",
    "strong",
    "del",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}}


def _keep_language_class(tag: str, attribute: str, value: str) -> str | None:
    """Only `language-xyz` classes survive on code, for the page's highlighter."""
    if tag == "code" and attribute == "class":
        kept = [c for c in value.split() if c.startswith("language-") and c[9:].isalnum()]
        return " ".join(kept) or None
    return value


def markdown_to_html(text: str) -> str:
    html = _markdown.render(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_keep_language_class,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
