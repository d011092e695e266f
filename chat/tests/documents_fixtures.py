"""Small files of every accepted kind, made in the test (nothing downloaded or shipped)."""

from __future__ import annotations

import io


def pdf_bytes(pages: list[str]) -> bytes:
    """A real PDF with one page per string (fpdf2, core font)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def docx_bytes(paragraphs: list[str]) -> bytes:
    from docx import Document

    document = Document()
    for text in paragraphs:
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
