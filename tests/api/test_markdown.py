"""The docs' Markdown subset renders to escaped HTML; nothing in the text becomes markup."""

from __future__ import annotations

import pytest

from fhir_adapter.api.markdown import inline, page, to_html


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        pytest.param("# Title *x*", '<h1 id="title-x">Title *x*</h1>', id="heading"),
        pytest.param("### Sub", '<h3 id="sub">Sub</h3>', id="heading-3"),
        pytest.param("one\ntwo\n\nthree", "<p>one two</p>\n<p>three</p>", id="paragraphs"),
        pytest.param("- a\n- b\n  more\n\nafter", "<ul><li>a</li><li>b more</li></ul>\n<p>after</p>", id="bullets"),
        pytest.param("1. a\n2. b", "<ol><li>a</li><li>b</li></ol>", id="numbered"),
        pytest.param("```json\n{\"a\": \"<b>\"}\n```", "<pre><code>{&quot;a&quot;: &quot;&lt;b&gt;&quot;}</code></pre>",
                     id="code-block-escaped"),
        pytest.param("| a | b |\n|---|---|\n| `x` | **y** |",
                     "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td><code>x</code></td>"
                     "<td><strong>y</strong></td></tr></tbody></table>", id="table"),
        pytest.param("<!-- hidden -->\ntext", "<p>text</p>", id="comment-dropped"),
        pytest.param("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>", id="html-escaped"),
    ],
)  # fmt: skip
def test_blocks(markdown: str, html: str) -> None:
    assert to_html(markdown) == html


@pytest.mark.parametrize(
    ("text", "html"),
    [
        pytest.param("[docs](https://hl7.org/fhir/R4/)", '<a href="https://hl7.org/fhir/R4/">docs</a>', id="https"),
        pytest.param("[here](#codes)", '<a href="#codes">here</a>', id="anchor"),
        pytest.param("[x](javascript:alert(1))", "x)", id="javascript-dropped"),
        pytest.param('[x](https://a/"onmouseover=")', '<a href="https://a/&quot;onmouseover=&quot;">x</a>',
                     id="quote-in-url-escaped"),
        pytest.param("`<b>` & **<i>**", "<code>&lt;b&gt;</code> &amp; <strong>&lt;i&gt;</strong>", id="inline-escaped"),
    ],
)  # fmt: skip
def test_inline(text: str, html: str) -> None:
    assert inline(text) == html


def test_page_escapes_the_title() -> None:
    html = page("text", "a <b> title")
    assert "<title>a &lt;b&gt; title</title>" in html
    assert html.startswith("<!DOCTYPE html>")
