"""The site's SVG writer (collapse_bench/leaderboard/svgplot.py): "nice" ticks by hand, NaN gaps, escaping,
coordinates on the axes' scale, and byte-identical output."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from collapse_bench.leaderboard import svgplot


def test_nice_ticks_by_hand() -> None:
    assert svgplot.nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert svgplot.nice_ticks(374.2, 381.7) == [374.0, 376.0, 378.0, 380.0, 382.0]
    assert svgplot.nice_ticks(0.47, 0.505) == [0.47, 0.48, 0.49, 0.5, 0.51]  # step 0.01 ≥ 0.035 / 4
    assert svgplot.nice_ticks(3.0, 3.0) == [2.8, 2.9, 3.0, 3.1, 3.2]  # a constant series gets a ±5% window
    assert svgplot.nice_ticks(math.nan, 1.0) == []


def test_points_land_on_the_axes_scale_and_nan_breaks_the_line() -> None:
    ax = svgplot.Axes(xlim=(0.0, 1.0), ylim=(0.0, 1.0))
    ax.plot([0.0, 0.5, math.nan, 1.0], [0.0, 0.5, 0.7, 1.0], label="a")
    svg = svgplot.render([ax]).decode()
    root = ET.fromstring(svg)  # well-formed XML
    ns = {"s": "http://www.w3.org/2000/svg"}
    circles = [(float(c.get("cx")), float(c.get("cy"))) for c in root.findall(".//s:circle", ns)]
    w, h = svgplot.PANEL_W - svgplot.LEFT - svgplot.RIGHT, svgplot.PANEL_H - svgplot.TOP - svgplot.BOTTOM
    expect = [(svgplot.LEFT + x * w, svgplot.TOP + h - y * h) for x, y in ((0, 0), (0.5, 0.5), (1, 1))]
    assert [(round(a, 2), round(b, 2)) for a, b in circles] == [(round(a, 2), round(b, 2)) for a, b in expect]
    assert len(root.findall(".//s:polyline", ns)) == 1  # (0, 0)-(0.5, 0.5); the NaN point breaks off (1, 1)


def test_text_is_escaped_and_output_is_deterministic() -> None:
    def draw() -> bytes:
        ax = svgplot.Axes(title="<script>alert(1)</script> & co", xlabel='"x"', legend=True)
        ax.plot([1, 2], [3, 4], label="</text><script>")
        return svgplot.render([ax, svgplot.Axes(title="empty")])

    one = draw()
    assert one == draw() and b"<script>" not in one and b"&lt;script&gt;" in one
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", one.decode())
    assert "no data" in texts and "&lt;/text&gt;&lt;script&gt;" in texts
    ET.fromstring(one)
