"""Pure SVG charts: well-formed XML with a labelled title and description that state every value,
escaped text, one mark per value, and series told apart without colour."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from fhir_adapter.report.svg import Bar, Reference, Series, bar_chart, line_chart, nice_max, percent

SVG = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


@pytest.mark.parametrize(
    ("value", "top"),
    [
        pytest.param(0.0, 1.0, id="zero"),
        pytest.param(0.093, 0.1, id="below-a-power"),
        pytest.param(0.1, 0.1, id="a-power"),
        pytest.param(0.11, 0.2, id="just-above"),
        pytest.param(0.21, 0.25, id="two-and-a-half"),
        pytest.param(0.3, 0.5, id="five"),
        pytest.param(177, 200, id="counts"),
    ],
)
def test_nice_max(value: float, top: float) -> None:
    assert nice_max(value) == pytest.approx(top)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(0.0953, "9.5%", id="rounds"),
        pytest.param(1.0, "100.0%", id="whole"),
        pytest.param(0, "0.0%", id="zero"),
    ],
)
def test_percent(value: float, text: str) -> None:
    assert percent(value) == text


def test_bar_chart_states_every_value_and_escapes() -> None:
    bars = [Bar("1-2", 0.12), Bar("<script>alert(1)</script>", None, "suppressed"), Bar("3-5", 0.0)]
    markup = bar_chart(bars, chart_id="c-1", title="Rate & band", description="Rates by band.")
    root = _parse(markup)  # well-formed
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c-1-title c-1-desc"
    assert root.find(f"{SVG}title").text == "Rate & band"  # type: ignore[union-attr]
    desc = root.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert desc == "Rates by band. 1-2: 12.0%; <script>alert(1)</script>: suppressed; 3-5: 0.0%."
    assert "<script>" not in markup
    rects = [r for r in root.iter(f"{SVG}rect") if r.get("fill") != "#ffffff"]
    assert len(rects) == 2  # no bar for the suppressed value
    assert [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g")] == [  # type: ignore[union-attr]
        "1-2: 12.0%", "<script>alert(1)</script>: suppressed", "3-5: 0.0%",
    ]  # fmt: skip


def test_bar_chart_without_bars() -> None:
    root = _parse(bar_chart([], chart_id="empty", title="Nothing", description="None."))
    assert root.find(f"{SVG}desc").text == "None. No data."  # type: ignore[union-attr]


@pytest.mark.parametrize("chart_id", ["1abc", "a b", 'a"b', ""])
def test_chart_ids_must_be_html_ids(chart_id: str) -> None:
    with pytest.raises(ValueError, match="HTML id"):
        bar_chart([], chart_id=chart_id, title="t", description="d")


def test_line_chart_marks_gaps_references_and_patterns() -> None:
    series = [Series("Quarter", [0.01, None, 0.04]), Series("Rolling", [0.1, 0.09, 0.095])]
    refs = [Reference("Benchmark", 0.05), Reference("Target", 0.06)]
    markup = line_chart(
        ["Q1", "Q2", "Q3"], series, references=refs, chart_id="t", title="Trend", description="Rates."
    )
    root = _parse(markup)
    desc = root.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert desc == (
        "Rates. Quarter: Q1 1.0%, Q2 no value, Q3 4.0%; Rolling: Q1 10.0%, Q2 9.0%, Q3 9.5%; "
        "Benchmark: 5.0%; Target: 6.0%."
    )
    paths = [p for p in root.iter(f"{SVG}path") if p.get("fill") == "none"]
    # the quarter line breaks at its gap (two one-point runs draw no line), the rolling line is one path
    assert len(paths) == 1
    marks = [g for g in root.iter(f"{SVG}g")]
    assert len(marks) == 5  # one per value
    dashed = {
        line.get("stroke-dasharray")
        for line in root.iter(f"{SVG}line")
        if line.find(f"{SVG}title") is not None
    }
    assert dashed == {"8 4", "3 3"}  # the two references differ by pattern, not only colour


def test_line_chart_checks_lengths() -> None:
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        line_chart(["a", "b", "c"], [Series("s", [0.1, 0.2])], chart_id="x", title="t", description="d")
