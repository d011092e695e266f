"""Text out of an uploaded file, page by page, or a clear refusal.

PDF: pypdf, one entry per page. DOCX: python-docx, paragraphs and tables. HTML: the standard
library's parser, visible text only (scripts and styles dropped). Markdown and plain text: the
text itself, decoded as UTF-8 (a byte-order mark and UTF-16 are recognised). Everything but
PDF is one page. A file whose text cannot be read raises DocumentRefused("document_unreadable")
with the reason, before anything is stored.
"""

from __future__ import annotations

import io
import logging
import re
from html.parser import HTMLParser
from pathlib import PurePath

from chat.documents.models import Document
from core.errors import ParleyError

logger = logging.getLogger(__name__)

EXTENSIONS = {
    ".pdf": Document.Kind.PDF,
    ".md": Document.Kind.MARKDOWN,
    ".markdown": Document.Kind.MARKDOWN,
    ".txt": Document.Kind.TEXT,
    ".text": Document.Kind.TEXT,
    ".html": Document.Kind.HTML,
    ".htm": Document.Kind.HTML,
    ".docx": Document.Kind.DOCX,
}
CONTENT_TYPES = {
    "application/pdf": Document.Kind.PDF,
    "text/markdown": Document.Kind.MARKDOWN,
    "text/x-markdown": Document.Kind.MARKDOWN,
    "text/plain": Document.Kind.TEXT,
    "text/html": Document.Kind.HTML,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (Document.Kind.DOCX),
}
MIME = {kind: mime for mime, kind in CONTENT_TYPES.items()}
MIME[Document.Kind.MARKDOWN] = "text/markdown"


class DocumentRefused(ParleyError):
    """An upload that is not taken: too large, of a kind not accepted, unreadable, or too many
    pages; `detail` says which and why."""


def kind_of(name: str, content_type: str) -> str | None:
    """The kind by file extension (an unknown one is refused), else, for a name without one, by
    the declared content type. The extractor then checks the bytes really are of that kind."""
    suffix = PurePath(name).suffix.lower()
    if suffix:
        return EXTENSIONS.get(suffix)
    return CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())


def pages_extract(kind: str, data: bytes, *, max_pages: int) -> list[str]:
    """The text of each page; refuses a file that cannot be read, holds no text, or has more
    than `max_pages` pages (counted before any text is extracted)."""
    try:
        pages = _EXTRACTORS[Document.Kind(kind)](data, max_pages)
    except DocumentRefused:
        raise
    except Exception as exc:  # every parser has its own errors; each means "cannot read it"
        logger.info("unreadable %s upload: %r", kind, exc)
        raise DocumentRefused(
            "document_unreadable", f"This file cannot be read as {kind.upper()}: {_reason(exc)}"
        ) from None
    pages = [_tidy(page) for page in pages]
    if not any(pages):
        raise DocumentRefused(
            "document_unreadable",
            "No text could be found in this file (a scanned PDF needs text recognition first).",
        )
    return pages


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


def _tidy(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _pdf(data: bytes, max_pages: int) -> list[str]:
    from pypdf import PdfReader

    if not data.lstrip()[:5].startswith(b"%PDF-"):
        raise DocumentRefused("document_unreadable", "This file is not a PDF (no %PDF header).")
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        raise DocumentRefused(
            "document_unreadable", "This PDF is encrypted: upload a copy without a password."
        )
    if len(reader.pages) > max_pages:
        raise DocumentRefused(
            "document_too_many_pages",
            f"This PDF has {len(reader.pages)} pages; the limit is {max_pages}.",
        )
    return [page.extract_text() or "" for page in reader.pages]


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    text = data.decode("utf-8-sig")  # UnicodeDecodeError: not text, refused by the caller
    if "\x00" in text[:4096]:
        raise DocumentRefused("document_unreadable", "This file is binary, not text.")
    return text


def _text(data: bytes, max_pages: int) -> list[str]:
    return [_decode(data)]


class _Visible(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "head"})
    BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html(data: bytes, max_pages: int) -> list[str]:
    parser = _Visible()
    parser.feed(_decode(data))
    parser.close()
    return ["".join(parser.parts)]


def _docx(data: bytes, max_pages: int) -> list[str]:
    from docx import Document as DocxDocument

    document = DocxDocument(io.BytesIO(data))
    parts = [paragraph.text for paragraph in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    return ["\n".join(parts)]


_EXTRACTORS = {
    Document.Kind.PDF: _pdf,
    Document.Kind.MARKDOWN: _text,
    Document.Kind.TEXT: _text,
    Document.Kind.HTML: _html,
    Document.Kind.DOCX: _docx,
}
