"""Charts for the admin, drawn on the server as inline SVG.

No script and no inline style: the strict CSP (project/settings.py CONTENT_SECURITY_POLICY)
allows neither, and a chart needs neither. Shapes carry classes that the admin stylesheet
(chat/static/parley_admin/admin.css) colours; every bar and point has a <title>, so hovering
shows its value, and each chart is an `img` with a label for screen readers. Labels are
escaped (organisation and model names are operators' text).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

Format = Callable[[float], str]

WIDTH = 560
HEIGHT = 200
MARGIN_LEFT = 56
MARGIN_RIGHT = 12
MARGIN_TOP = 14
MARGIN_BOTTOM = 34
MAX_X_LABELS = 8


def plain(value: float) -> str:
    return f"{value:,.0f}"


def money(value: float) -> str:
    return f"{value:,.4f}" if value < 100 else f"{value:,.2f}"


def milliseconds(value: float) -> str:
    return f"{value:,.0f} ms"


def _nice_ceiling(value: float) -> float:
    """A round number at or above `value` for the top of an axis (1, 2, 2.5, 5 × 10^n)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 2.5, 5, 10) if step * magnitude >= value)


def _svg(title: str, body: list[str], *, width: int = WIDTH, height: int = HEIGHT) -> SafeString:
    label = escape(title)
    return mark_safe(  # noqa: S308 - every piece of text in `body` is escaped where it is made
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{label}</title>{''.join(body)}</svg>"
    )


def _empty(y: float) -> str:
    return (
        f'<text class="empty" x="{WIDTH / 2}" y="{y}" text-anchor="middle">'
        "No data in this period</text>"
    )


def _y_axis(top: float, fmt: Format, plot_height: float, plot_width: float) -> list[str]:
    parts = []
    for fraction in (0.0, 0.5, 1.0):
        y = MARGIN_TOP + plot_height * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_width:.1f}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(top * fraction))}</text>"
        )
    return parts


def _x_labels(labels: Sequence[str], centres: list[float]) -> list[str]:
    every = max(1, -(-len(labels) // MAX_X_LABELS))
    return [
        f'<text class="axis" x="{x:.1f}" y="{HEIGHT - MARGIN_BOTTOM + 16}" '
        f'text-anchor="middle">{escape(label)}</text>'
        for i, (label, x) in enumerate(zip(labels, centres, strict=True))
        if i % every == 0 or i == len(labels) - 1
    ]


def bar_chart(
    *, title: str, labels: Sequence[str], values: Sequence[float], fmt: Format = plain
) -> SafeString:
    """Vertical bars, one per label (e.g. per day)."""
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    top = _nice_ceiling(max(values, default=0))
    slot = plot_width / max(1, len(values))
    body = _y_axis(top, fmt, plot_height, plot_width)
    centres = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        bar_height = plot_height * value / top
        x = MARGIN_LEFT + i * slot + slot * 0.15
        centres.append(MARGIN_LEFT + i * slot + slot / 2)
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{MARGIN_TOP + plot_height - bar_height:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{bar_height:.1f}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
    if not values:
        body.append(_empty(HEIGHT / 2))
    body += _x_labels(labels, centres)
    return _svg(title, body)


@dataclass(frozen=True)
class Line:
    name: str
    values: Sequence[float | None]  # None: no point on that label
    css_class: str  # "line-a", "line-b": coloured by the stylesheet


def line_chart(
    *, title: str, labels: Sequence[str], lines: Sequence[Line], fmt: Format = plain
) -> SafeString:
    """One polyline per series over the same labels, with a legend."""
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    known = [v for line in lines for v in line.values if v is not None]
    top = _nice_ceiling(max(known, default=0))
    slot = plot_width / max(1, len(labels))
    centres = [MARGIN_LEFT + i * slot + slot / 2 for i in range(len(labels))]
    body = _y_axis(top, fmt, plot_height, plot_width)
    for n, line in enumerate(lines):
        points = [
            (centres[i], MARGIN_TOP + plot_height * (1 - value / top), labels[i], value)
            for i, value in enumerate(line.values)
            if value is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
            body.append(f'<polyline class="{line.css_class}" points="{path}"/>')
        for x, y, label, value in points:
            body.append(
                f'<circle class="{line.css_class}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                f"<title>{escape(line.name)} {escape(label)}: {escape(fmt(value))}</title>"
                "</circle>"
            )
        body.append(
            f'<text class="legend {line.css_class}-text" x="{WIDTH - MARGIN_RIGHT - 8}" '
            f'y="{MARGIN_TOP + 4 + n * 14}" text-anchor="end">{escape(line.name)}</text>'
        )
    if not known:
        body.append(_empty(HEIGHT / 2))
    body += _x_labels(labels, centres)
    return _svg(title, body)


def hbar_chart(
    *, title: str, labels: Sequence[str], values: Sequence[float], fmt: Format = plain
) -> SafeString:
    """Horizontal bars, one row per label (e.g. per organisation and model), largest first."""
    row = 22
    label_width = 220
    height = MARGIN_TOP + row * max(1, len(values)) + 8
    plot_width = WIDTH - label_width - 90
    top = max(values, default=0) or 1
    body = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = MARGIN_TOP + i * row
        bar_width = plot_width * value / top
        short = label if len(label) <= 34 else label[:33] + "…"
        body.append(
            f'<text class="axis" x="{label_width - 6}" y="{y + 14}" text-anchor="end">'
            f"{escape(short)}</text>"
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{bar_width:.1f}" '
            f'height="{row - 6}"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
            f'<text class="axis" x="{label_width + bar_width + 6:.1f}" y="{y + 14}">'
            f"{escape(fmt(value))}</text>"
        )
    if not values:
        body.append(_empty(MARGIN_TOP + 14))
    return _svg(title, body, height=height)
