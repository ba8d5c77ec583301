"""The HTML builder escapes every text and attribute value it is not told is markup."""

from __future__ import annotations

import pytest

from fhir_adapter.api.html import Html, attributes, el, esc, join, raw


@pytest.mark.parametrize(
    ("value", "html"),
    [
        pytest.param(
            "<script>alert('x')</script>", "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;", id="script"
        ),
        pytest.param('a "b" & c', "a &quot;b&quot; &amp; c", id="quotes-and-amp"),
        pytest.param(None, "", id="none"),
        pytest.param(12, "12", id="int"),
        pytest.param(Html("<b>ok</b>"), "<b>ok</b>", id="markup-kept"),
    ],
)
def test_esc(value: object, html: str) -> None:
    assert esc(value) == html


@pytest.mark.parametrize(
    ("attrs", "html"),
    [
        pytest.param({"class_": "x"}, ' class="x"', id="trailing-underscore"),
        pytest.param({"aria_label": "a"}, ' aria-label="a"', id="underscore-to-hyphen"),
        pytest.param({"selected": True}, " selected", id="bare"),
        pytest.param({"selected": False, "title": None}, "", id="omitted"),
        pytest.param({"value": '"><script>'}, ' value="&quot;&gt;&lt;script&gt;"', id="attribute-breakout"),
    ],
)
def test_attributes(attrs: dict[str, object], html: str) -> None:
    assert attributes(attrs) == html


def test_elements_nest_and_escape() -> None:
    page = el("ul", [el("li", name) for name in ("a<b", "c&d")], id="x")
    assert page == '<ul id="x"><li>a&lt;b</li><li>c&amp;d</li></ul>'
    assert isinstance(page, Html)
    assert (
        el("input", type="hidden", name="n", value="<v>")
        == '<input type="hidden" name="n" value="&lt;v&gt;">'
    )
    assert el("p", "x", None, 3) == "<p>x3</p>"
    assert join(["<a>", el("b", "c")], ", ") == "&lt;a&gt;, <b>c</b>"
    assert el("div", raw("<svg></svg>")) == "<div><svg></svg></div>"
