from __future__ import annotations

from chat.rendering import markdown_to_html


def test_markdown_renders_lists_emphasis_and_code_with_language_class():
    html = markdown_to_html("**bold** and *it*\n\n- one\n- two\n\n```python\nprint(1)\n```")
    assert "<strong>bold</strong>" in html and "<li>one</li>" in html
    assert '<code class="language-python">print(1)' in html


def test_raw_html_in_model_output_stays_text():
    html = markdown_to_html('<script>alert(1)</script><img src=x onerror="alert(2)">')
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_javascript_links_lose_their_href():
    html = markdown_to_html("[click](javascript:alert(1)) [ok](https://example.org)")
    assert 'href="javascript' not in html  # left as plain text, never a link
    assert 'href="https://example.org"' in html and 'rel="noopener noreferrer nofollow"' in html


def test_code_class_cannot_smuggle_other_classes_or_attributes():
    html = markdown_to_html('```python" onmouseover="alert(1)\nx\n```')
    assert "onmouseover" not in html
