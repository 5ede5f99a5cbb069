"""The status page's plots: columns from points (means of counts, sums of events, gaps), SVG that escapes its
labels and draws what the numbers say."""

from __future__ import annotations

import re
from datetime import timedelta
from xml.etree import ElementTree

from vctest import T0

from vcycle.web import plots


def _points(minutes: list[int], running: list[int]) -> list[tuple[object, dict[str, dict[str, int]]]]:
    return [(T0 + timedelta(minutes=m), {"mt": {"running": r, "creates": 1}, "other": {"running": 100}})
            for m, r in zip(minutes, running, strict=True)]


def test_a_column_holds_the_mean_of_its_counts_and_the_sum_of_its_events() -> None:
    f = plots.frame(_points([0, 1, 2, 3], [2, 4, 6, 6]), T0, T0 + timedelta(minutes=4), columns=2, machinetype="mt")
    assert f.values == ({"running": 3.0, "creates": 2.0}, {"running": 6.0, "creates": 2.0})
    both = plots.frame(_points([0], [2]), T0, T0 + timedelta(minutes=4), columns=2)
    assert both.values[0] == {"running": 102.0, "creates": 1.0}


def test_a_column_without_points_is_a_gap_and_points_outside_the_window_are_left_out() -> None:
    f = plots.frame(_points([-5, 0, 9, 30], [1, 1, 1, 1]), T0, T0 + timedelta(minutes=20), columns=4)
    assert f.values[0] is not None and f.values[1] is not None and f.values[2] is None and f.values[3] is None
    summed = plots.add([f, plots.frame(_points([12], [5]), T0, T0 + timedelta(minutes=20), columns=4)])
    assert summed.values[2] == {"running": 105.0, "creates": 1.0} and summed.values[3] is None


def test_events_are_counted_per_hour_back_from_now() -> None:
    now = T0 + timedelta(hours=3)
    points = [(T0 + timedelta(minutes=m), {"mt": {"creates": 2, "aborts": 1, "running": 9}}) for m in (10, 20, 130)]
    f = plots.hourly(points, T0, now)
    assert len(f.values) == 3
    assert f.values[0] == {"creates": 4.0, "aborts": 2.0} and f.values[1] is None
    assert f.values[2] == {"creates": 2.0, "aborts": 1.0}


def test_stacked_bands_are_drawn_per_state_with_gaps_apart() -> None:
    points = [(T0 + timedelta(minutes=m), {"mt": {"running": 3, "starting": 1}}) for m in (0, 1, 5)]
    f = plots.frame(points, T0, T0 + timedelta(minutes=6), columns=6)
    svg = plots.stacked(f, plots.STATES, "Machines <by> state")
    tree = ElementTree.fromstring(svg)  # well-formed
    polygons = tree.findall(".//{*}polygon") or tree.findall(".//polygon")
    # two runs of columns (0-1 and 5), two states each
    assert len(polygons) == 4
    assert {p.get("fill") for p in polygons} == {plots.COLOURS["running"], plots.COLOURS["starting"]}
    assert "Machines &lt;by&gt; state" in svg and "<by>" not in svg
    # the y axis reaches the stacked total (4), not one state's count
    assert re.search(r">4</text>", svg) and "draining" not in svg


def test_an_empty_window_says_so_and_bars_and_histograms_carry_their_numbers() -> None:
    empty = plots.frame([], T0, T0 + timedelta(hours=1))
    assert "no points in this window" in plots.lines(empty, ("idle",), "demand")
    f = plots.hourly([(T0 + timedelta(minutes=5), {"mt": {"aborts": 7}})], T0, T0 + timedelta(hours=1))
    assert "aborts: 7" in plots.bars(f, plots.EVENTS, "events")
    histogram = plots.histogram([("< 1 min", 5), ("none & more", 0)], "ages")
    ElementTree.fromstring(histogram)
    assert "&lt; 1 min: 5" in histogram and "none &amp; more" in histogram


def test_a_timeline_has_a_segment_per_state_change() -> None:
    changes = [("requested", T0, "wanted", ""), ("running", T0 + timedelta(minutes=5), "the cloud <says>", "")]
    svg = plots.timeline(changes, T0 + timedelta(minutes=60))
    ElementTree.fromstring(svg)
    rects = re.findall(r'<rect x="([\d.]+)" y="20" width="([\d.]+)"', svg)
    assert len(rects) == 2
    (x0, w0), (x1, w1) = [(float(x), float(w)) for x, w in rects]
    assert abs(w1 / w0 - 11.0) < 0.05 and abs(x0 + w0 - x1) < 0.2  # 5 min then 55 min, side by side
    assert "the cloud &lt;says&gt;" in svg


def test_a_merged_point_weighs_as_the_points_it_stands_for() -> None:
    merged = {"mt": {"running": 10.0, "creates": 5}, "": {"points": 9}}
    points = [(T0, merged), (T0 + timedelta(minutes=1), {"mt": {"running": 20, "creates": 1}})]
    f = plots.frame(points, T0, T0 + timedelta(minutes=2), columns=1)
    assert f.values == ({"running": 11.0, "creates": 6.0},)  # (9 x 10 + 20) / 10; events summed
