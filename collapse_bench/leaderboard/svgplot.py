"""A minimal deterministic SVG line-chart writer for the site's plots (panels of lines, markers, error bars,
text annotations, a legend).

Kept instead of matplotlib for speed and byte-stable output: one matplotlib SVG cost ≈ 0.1–0.2 s (most of a
build of 11 rows; ≈ 30 min at 1,000 rows) and its bytes change with the matplotlib version, which made
``leaderboard check`` depend on an unpinned install; this writer takes milliseconds and its output depends only
on this file. Every text is XML-escaped; coordinates are printed with two decimals; no clock, no ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
GREY = "#737373"
PANEL_W, PANEL_H = 420, 300
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 26, 50
FONT = 'font-family="DejaVu Sans, Verdana, sans-serif"'


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Ticks at 1, 2 or 5 × 10^k covering [lo, hi] (the classic "nice numbers" rule)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks: list[float] = []
    t = first
    while t <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t = first + step * len(ticks)
    if ticks[-1] < hi - step * 1e-9:
        ticks.append(round(t, 12))
    return ticks


def tick_label(v: float) -> str:
    return f"{v:.6g}" if v != 0 else "0"


@dataclass
class Series:
    x: list[float]
    y: list[float]
    label: str | None
    color: str
    dash: str | None = None  # SVG stroke-dasharray
    marker: str | None = "o"  # "o" | "s" | None
    size: float = 3.0
    lo: list[float] | None = None  # error bars (absolute bounds)
    hi: list[float] | None = None
    line: bool = True


@dataclass
class Axes:
    series: list[Series] = field(default_factory=list)
    notes: list[tuple[float, float, str, str]] = field(default_factory=list)
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    xticks: tuple[list[float], list[str]] | None = None
    legend: bool = False

    def plot(self, x: Iterable[float], y: Iterable[float], label: str | None = None, color: str | None = None, **kw: Any) -> None:
        c = color or PALETTE[sum(s.color in PALETTE for s in self.series) % len(PALETTE)]
        self.series.append(Series([float(v) for v in x], [float(v) for v in y], label, c, **kw))

    def annotate(self, x: float, y: float, text: str, color: str = GREY) -> None:
        self.notes.append((float(x), float(y), text, color))


def _text(x: float, y: float, body: str, size: int, anchor: str = "middle", fill: str = "#1b1b1b", attrs: str = "") -> str:
    """A ``<text>`` element; ``body`` is escaped here."""
    pos = attrs or f'x="{x:.2f}" y="{y:.2f}"'
    return f'<text {pos} text-anchor="{anchor}" font-size="{size}" fill="{fill}" {FONT}>{escape(body)}</text>'


def _finite(vals: Sequence[float]) -> list[float]:
    return [v for v in vals if math.isfinite(v)]


def _panel(ax: Axes, ox: float) -> list[str]:
    w, h = PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM
    xs = [v for s in ax.series for v in _finite(s.x)]
    ys = [v for s in ax.series for v in _finite([*s.y, *(s.lo or []), *(s.hi or [])])]
    out = [_text(ox + PANEL_W / 2, 16, ax.title, 12)]
    if not xs or not ys:
        return [*out, _text(ox + PANEL_W / 2, PANEL_H / 2, "no data", 10, fill=GREY)]
    x0, x1 = ax.xlim or (min(xs), max(xs))
    yt = nice_ticks(*(ax.ylim or (min(ys), max(ys))))
    y0, y1 = ax.ylim or (yt[0], yt[-1])
    xt = ax.xticks[0] if ax.xticks else nice_ticks(x0, x1)
    if not ax.xlim:
        x0, x1 = min([x0, *xt]), max([x1, *xt])
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5

    def px(v: float) -> float:
        return ox + LEFT + (v - x0) / (x1 - x0) * w

    def py(v: float) -> float:
        return TOP + h - (v - y0) / (y1 - y0) * h

    grid = 'stroke="#e5e5e5" stroke-width="1"'
    for v in yt:
        if y0 - 1e-12 <= v <= y1 + 1e-12:
            out.append(f'<line x1="{px(x0):.2f}" y1="{py(v):.2f}" x2="{px(x1):.2f}" y2="{py(v):.2f}" {grid}/>')
            out.append(_text(px(x0) - 5, py(v) + 3, tick_label(v), 9, anchor="end"))
    labels = ax.xticks[1] if ax.xticks else [tick_label(v) for v in xt]
    for v, lab in zip(xt, labels):
        if x0 - 1e-12 <= v <= x1 + 1e-12:
            out.append(f'<line x1="{px(v):.2f}" y1="{TOP}" x2="{px(v):.2f}" y2="{TOP + h}" {grid}/>')
            out.append(_text(px(v), TOP + h + 13, lab, 9))
    out.append(f'<rect x="{ox + LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#333" stroke-width="1"/>')
    out.append(_text(ox + LEFT + w / 2, PANEL_H - 12, ax.xlabel, 10))
    if ax.ylabel:
        out.append(_text(0, 0, ax.ylabel, 10, attrs=f'transform="translate({ox + 13:.2f},{TOP + h / 2:.2f}) rotate(-90)"'))
    for s in ax.series:
        pts = list(zip(s.x, s.y))
        if s.line:
            runs: list[list[tuple[float, float]]] = [[]]
            for a, b in pts:  # NaN breaks the line, as in matplotlib
                if math.isfinite(a) and math.isfinite(b):
                    runs[-1].append((a, b))
                elif runs[-1]:
                    runs.append([])
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            for run in runs:
                if len(run) > 1:
                    d = " ".join(f"{px(a):.2f},{py(b):.2f}" for a, b in run)
                    out.append(f'<polyline points="{d}" fill="none" stroke="{s.color}" stroke-width="1.5"{dash}/>')
        if s.lo is not None and s.hi is not None:
            for a, lo, hi in zip(s.x, s.lo, s.hi):
                if all(math.isfinite(v) for v in (a, lo, hi)) and hi > lo:
                    ends = f'x1="{px(a):.2f}" y1="{py(lo):.2f}" x2="{px(a):.2f}" y2="{py(hi):.2f}"'
                    out.append(f'<line {ends} stroke="{s.color}" stroke-width="1"/>')
        for a, b in pts:
            if s.marker and math.isfinite(a) and math.isfinite(b):
                if s.marker == "s":
                    r = s.size
                    box = f'x="{px(a) - r:.2f}" y="{py(b) - r:.2f}" width="{2 * r:.2f}" height="{2 * r:.2f}"'
                    out.append(f'<rect {box} fill="{s.color}"/>')
                else:
                    out.append(f'<circle cx="{px(a):.2f}" cy="{py(b):.2f}" r="{s.size:.2f}" fill="{s.color}"/>')
    for a, b, text, color in ax.notes:
        if math.isfinite(a) and math.isfinite(b):
            out.append(_text(px(a), py(b) - 6, text, 7, fill=color))
    if ax.legend:
        shown = [s for s in ax.series if s.label]
        for i, s in enumerate(shown):
            y = TOP + 12 + 12 * i
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            if s.line:
                ends = f'x1="{px(x0) + 8:.2f}" y1="{y - 3}" x2="{px(x0) + 26:.2f}" y2="{y - 3}"'
                out.append(f'<line {ends} stroke="{s.color}" stroke-width="1.5"{dash}/>')
            else:  # a scatter series: its marker
                out.append(f'<circle cx="{px(x0) + 17:.2f}" cy="{y - 3}" r="{s.size:.2f}" fill="{s.color}"/>')
            out.append(_text(px(x0) + 30, y, s.label or "", 8, anchor="start"))
    return out


def render(axes: Sequence[Axes]) -> bytes:
    """One row of panels as an SVG document (bytes)."""
    width = PANEL_W * len(axes)
    body = [f'<rect x="0" y="0" width="{width}" height="{PANEL_H}" fill="#ffffff"/>']
    for i, ax in enumerate(axes):
        body += _panel(ax, i * PANEL_W)
    head = (
        '<?xml version="1.0" encoding="utf-8" standalone="no"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_H}" '
        f'viewBox="0 0 {width} {PANEL_H}" version="1.1">\n'
    )
    return (head + "\n".join(body) + "\n</svg>\n").encode()
