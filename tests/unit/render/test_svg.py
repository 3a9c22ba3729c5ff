"""The one chart renderer: scaled, gapped where there is no data, described in words, escaped."""

from __future__ import annotations

import re
from functools import partial

from npucenter.render.svg import Series as Line
from npucenter.render.svg import bar_chart, line_chart, ticks

# The dashboard's short time charts.
time_chart = partial(
    line_chart,
    width=460,
    height=150,
    x_ticks=False,
    x_end_label="now",
    min_distinct_x=2,
    empty_text="collecting samples…",
)


def test_time_chart_splits_lines_at_gaps_and_scales_to_a_round_top() -> None:
    svg = time_chart(
        [Line("p50", [(0.0, 1.0), (1.0, 3.0), (2.0, None), (3.0, 2.0), (4.0, 4.0)])],
        unit="ms",
        title="TTFT",
    )
    assert svg.count("<polyline") == 2  # one segment each side of the gap
    assert ">5<" in svg  # the y scale ends at the round number above 4
    assert "<title>TTFT: p50 latest 4, max 4 ms</title>" in svg


def test_time_chart_draws_a_lone_point_and_names_each_line() -> None:
    svg = time_chart(
        [Line("p50", [(0.0, None), (1.0, 2.0)]), Line("p95", [(0.0, None), (1.0, None)])],
        title="x",
    )
    assert "<circle" in svg and "<polyline" not in svg
    assert ">p50<" in svg and ">p95<" in svg and "p95 no data" in svg


def test_time_chart_points_stay_inside_the_picture() -> None:
    svg = time_chart([Line("", [(0.0, 0.0), (5.0, 123.0), (10.0, 7.0)])], width=300, height=100)
    points = re.search(r'points="([^"]+)"', svg)
    assert points is not None
    for pair in points.group(1).split():
        x, y = map(float, pair.split(","))
        assert 0 <= x <= 300 and 0 <= y <= 100


def test_time_chart_waits_for_two_instants() -> None:
    assert "collecting" in time_chart([Line("", [(1.0, 2.0)])])
    assert "collecting" in time_chart([])


def test_bar_chart_escapes_labels_and_says_the_values() -> None:
    svg = bar_chart([("<b>acme</b>", 1234.0), ("uni", 5.0)], unit="tokens", title="Tokens")
    assert "<b>" not in svg and "&lt;b&gt;acme" in svg
    assert "acme&lt;/b&gt;: 1,234 tokens; uni: 5 tokens" in svg


def test_report_charts_have_ticks_markers_steps_and_a_log_axis() -> None:
    assert ticks(0, 10)[0] == 0 and ticks(0, 10)[-1] == 10
    svg = line_chart(
        [Line("s", [(0, 0), (1, 2)])], title="t", x_label="x", y_label="y", markers=True
    )
    assert svg.startswith("<svg") and svg.count("<circle") == 2
    stepped = line_chart([Line("cdf", [(1.0, 0.1), (2.0, 0.5)])], step=True)
    assert len(re.search(r'points="([^"]+)"', stepped).group(1).split()) == 3  # type: ignore[union-attr]
    log = line_chart([Line("c", [(0.0, 0.0), (0.01, 0.2), (10.0, 1.0)])], log_x=True)
    assert ">0.01<" in log and ">10<" in log  # decades; the non-positive x is left out
    assert "t: no data" in line_chart([], title="t")


def test_bar_chart_says_n_a_for_a_missing_value() -> None:
    bars = bar_chart([("a", 1.0), ("b", None)], title="t", unit="u")
    assert "n/a" in bars and bars.count("<rect") == 1 and "b: n/a" in bars
