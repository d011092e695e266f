from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from chat.rendering import markdown_to_html

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Render Markdown to sanitized HTML (see chat/rendering.py for why it is safe)."""
    return mark_safe(markdown_to_html(text))  # noqa: S308 - sanitized by nh3
