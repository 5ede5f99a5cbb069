"""The status page's plots, drawn as SVG on the server from the time series (vcycle/core/series.py).

Nothing is fetched by the browser to draw them: no script, no font, no CDN.
The points of a window are first put into a fixed number of columns (a
column's state counts are the mean of its points, its events their sum), so
a plot of fourteen days costs what a plot of one hour costs. A column
without points is a gap (vcycle was not running), not a zero.

Pure: the window's end (``now``) is an argument; no clock, no I/O. Every
label is escaped; colours are presentation attributes, so that a strict
Content-Security-Policy (no inline style) holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

from vcycle.core.series import WEIGHT, weight
from vcycle.core.states import MachineState

Point = Mapping[str, Mapping[str, float]]  # machinetype -> {key: count}
STATES = tuple(s.value for s in MachineState if s is not MachineState.GONE)
EVENTS = ("creates", "deletes", "aborts")
COLOURS = {
    "requested": "#9e9e9e", "starting": "#64b5f6", "running": "#2e7d32", "draining": "#f9a825",
    "stopped": "#8d6e63", "failed": "#c62828", "deleting": "#6a1b9a", "delete_failed": "#ad1457",
    "create_failed": "#ef6c00", "idle": "#1565c0", "running_jobs": "#00897b", "creates": "#2e7d32",
    "deletes": "#546e7a", "aborts": "#c62828", "gone": "#b0bec5",
}
LABELS = {"idle": "idle jobs", "running_jobs": "running jobs"}
WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22
TICKS = [timedelta(minutes=m) for m in (5, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 4320)]


@dataclass(frozen=True, slots=True)
class Frame:
    """A window cut into columns: ``values[i]`` for the columns with points, None where there were none."""

    since: datetime
    now: datetime
    values: tuple[Mapping[str, float] | None, ...]

    @property
    def step(self) -> timedelta:
        return (self.now - self.since) / max(1, len(self.values))


def frame(points: Iterable[tuple[datetime, Point]], since: datetime, now: datetime, columns: int = 240,
          machinetype: str | None = None) -> Frame:
    """The points of one space in ``[since, now]``, in ``columns`` columns; one machinetype's, or all summed."""
    width = (now - since).total_seconds() / columns
    sums: list[dict[str, float]] = [{} for _ in range(columns)]
    seen = [0.0] * columns
    for at, point in points:
        offset = (at - since).total_seconds()
        if offset < 0 or at > now or width <= 0:
            continue
        i = min(columns - 1, int(offset / width))
        w = weight(point)  # a point merged from older ones stands for them all
        seen[i] += w
        for mt, counts in point.items():
            if mt != WEIGHT and (machinetype is None or mt == machinetype):
                for key, n in counts.items():
                    sums[i][key] = sums[i].get(key, 0.0) + (n if key in EVENTS else n * w)
    values = tuple(None if not n else {k: (v if k in EVENTS else v / n) for k, v in s.items()}
                   for s, n in zip(sums, seen, strict=True))
    return Frame(since, now, values)


def add(frames: Sequence[Frame]) -> Frame:
    """Frames of one window (several spaces) summed column by column; a column is a gap only where all are."""
    first = frames[0]
    values: list[Mapping[str, float] | None] = []
    for column in zip(*(f.values for f in frames), strict=True):
        present = [c for c in column if c is not None]
        summed: dict[str, float] = {}
        for c in present:
            for k, v in c.items():
                summed[k] = summed.get(k, 0.0) + v
        values.append(summed if present else None)
    return Frame(first.since, first.now, tuple(values))


def hourly(points: Iterable[tuple[datetime, Point]], since: datetime, now: datetime,
           machinetype: str | None = None) -> Frame:
    """Creates, deletes and aborts per hour of the window (hours counted back from ``now``)."""
    hours = max(1, math.ceil((now - since).total_seconds() / 3600))
    start = now - timedelta(hours=hours)
    events = [(at, {mt: {k: v for k, v in c.items() if k in EVENTS} for mt, c in p.items()}) for at, p in points]
    return frame(events, start, now, hours, machinetype)


def stacked(f: Frame, keys: Sequence[str], title: str) -> str:
    """The keys' values stacked as bands (machines by state)."""
    shown = [k for k in keys if any(v and v.get(k) for v in f.values)]
    top = _nice(max((sum(v.get(k, 0.0) for k in shown) for v in f.values if v), default=0.0))
    bands = []
    for run in _runs(f):
        base = [0.0] * len(run)
        for key in shown:
            upper = [b + (f.values[i] or {}).get(key, 0.0) for b, i in zip(base, run, strict=True)]
            outline = [spot for i, u in zip(run, upper, strict=True)
                       for spot in ((_x(f, i, 0.0), _y(u, top)), (_x(f, i, 1.0), _y(u, top)))]
            lower = [spot for i, b in zip(run, base, strict=True)
                     for spot in ((_x(f, i, 0.0), _y(b, top)), (_x(f, i, 1.0), _y(b, top)))]
            outline += lower[::-1]
            bands.append(f'<polygon points="{_path(outline)}" fill="{COLOURS.get(key, "#777")}">'
                         f"<title>{escape(LABELS.get(key, key))}</title></polygon>")
            base = upper
    return _svg(title, f, top, "".join(bands), shown)


def lines(f: Frame, keys: Sequence[str], title: str) -> str:
    """The keys' values as lines (demand against running machines)."""
    top = _nice(max((v.get(k, 0.0) for v in f.values if v for k in keys), default=0.0))
    drawn = []
    for key in keys:
        for run in _runs(f):
            spots = [(_x(f, i, 0.5), _y((f.values[i] or {}).get(key, 0.0), top)) for i in run]
            if len(spots) == 1:
                spots.append((spots[0][0] + 1, spots[0][1]))
            drawn.append(f'<polyline points="{_path(spots)}" fill="none" stroke-width="2" '
                         f'stroke="{COLOURS.get(key, "#777")}"><title>{escape(LABELS.get(key, key))}</title>'
                         "</polyline>")
    return _svg(title, f, top, "".join(drawn), keys, {"running": "running machines"})


def bars(f: Frame, keys: Sequence[str], title: str) -> str:
    """The keys' values side by side in each column (events per hour)."""
    top = _nice(max((v.get(k, 0.0) for v in f.values if v for k in keys), default=0.0))
    drawn = []
    share = 1.0 / (len(keys) + 1)
    for i, v in enumerate(f.values):
        for j, key in enumerate(keys):
            n = (v or {}).get(key, 0.0)
            if n:
                x0, x1, y = _x(f, i, share * (j + 0.5)), _x(f, i, share * (j + 1.5)), _y(n, top)
                drawn.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(0.5, x1 - x0):.1f}" '
                             f'height="{_y(0.0, top) - y:.1f}" fill="{COLOURS.get(key, "#777")}">'
                             f"<title>{escape(key)}: {n:g} ({_when(f.since + f.step * i)})</title></rect>")
    return _svg(title, f, top, "".join(drawn), keys)


def histogram(counts: Sequence[tuple[str, int]], title: str) -> str:
    """Labelled counts as bars (heartbeat ages)."""
    top = _nice(float(max((n for _, n in counts), default=0)))
    inner = WIDTH - LEFT - RIGHT
    slot = inner / max(1, len(counts))
    drawn = [_yaxis(top)]
    for i, (label, n) in enumerate(counts):
        x, y = LEFT + slot * i + slot * 0.15, _y(float(n), top)
        drawn.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{_y(0.0, top) - y:.1f}" '
                     f'fill="#1565c0"><title>{escape(label)}: {n}</title></rect>'
                     f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - 6}" text-anchor="middle">{escape(label)}</text>')
    return _figure(title, "".join(drawn), HEIGHT, ())


def _runs(f: Frame) -> list[list[int]]:
    """The columns with points, in runs of neighbours."""
    runs: list[list[int]] = []
    for i, v in enumerate(f.values):
        if v is None:
            continue
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _nice(value: float) -> float:
    """The top of a y axis at or above ``value``: a whole number of steps of 1, 2 or 5 x 10^k, about four."""
    step = _step(value)
    return max(1.0, math.ceil(value / step - 1e-9) * step)


def _step(top: float) -> float:
    """The y axis' step for values up to ``top``: 1, 2 or 5 x 10^k, at least 1 (machines are whole)."""
    rough = top / 4
    if rough <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(rough))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= rough - 1e-9)


def _x(f: Frame, column: int, within: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (column + within) / max(1, len(f.values))


def _y(value: float, top: float) -> float:
    return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * value / top


def _path(spots: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in spots)


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _yaxis(top: float) -> str:
    parts = []
    step = _step(top)
    value = 0.0
    while value <= top + 1e-9:
        y = _y(value, top)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{value:g}</text>')
        value += step
    return "".join(parts)


def _xaxis(f: Frame) -> str:
    span = f.now - f.since
    tick = next((t for t in TICKS if span / t <= 7), TICKS[-1])
    fmt = "%H:%M" if span <= timedelta(days=1) else "%d %b %H:%M"
    epoch = datetime(1970, 1, 1, tzinfo=f.since.tzinfo)
    first = epoch + tick * math.ceil((f.since - epoch) / tick)
    parts, at = [], first
    while at <= f.now:
        x = LEFT + (WIDTH - LEFT - RIGHT) * ((at - f.since) / span if span else 0.0)
        anchor = "end" if x > WIDTH - RIGHT - 30 else "middle"
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{at.strftime(fmt)}</text>')
        at += tick
    return "".join(parts)


def _svg(title: str, f: Frame, top: float, body: str, keys: Sequence[str],
         labels: Mapping[str, str] | None = None) -> str:
    empty = "" if any(v for v in f.values) else (f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
                                                  "no points in this window</text>")
    return _figure(title, _yaxis(top) + body + _xaxis(f) + empty, HEIGHT, keys, labels)


def _figure(title: str, body: str, height: int, keys: Iterable[str], labels: Mapping[str, str] | None = None) -> str:
    named = {**LABELS, **(labels or {})}
    legend = "".join(f'<span class="key"><svg width="10" height="10" aria-hidden="true"><rect width="10" '
                     f'height="10" fill="{COLOURS.get(k, "#777")}"/></svg>{escape(named.get(k, k))}</span>'
                     for k in keys)
    return (f'<figure class="plot"><figcaption>{escape(title)}</figcaption>'
            f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
            f'aria-label="{escape(title)}">{body}</svg><div class="legend">{legend}</div></figure>')


def timeline(changes: Sequence[tuple[str, datetime, str, str]], end: datetime) -> str:
    """A machine's history as one bar: a segment per state, from each change to the next (the last to ``end``)."""
    if not changes:
        return _figure("History", "", 84, ())
    start = changes[0][1]
    span = max((end - start).total_seconds(), 1.0)
    inner = WIDTH - LEFT - RIGHT
    drawn = []
    for i, (state, at, reason, _cause) in enumerate(changes):
        until = changes[i + 1][1] if i + 1 < len(changes) else end
        x0 = LEFT + inner * (at - start).total_seconds() / span
        x1 = LEFT + inner * (until - start).total_seconds() / span
        drawn.append(f'<rect x="{x0:.1f}" y="20" width="{max(1.0, x1 - x0):.1f}" height="40" '
                     f'fill="{COLOURS.get(state, "#777")}"><title>{escape(state)} from {_when(at)}: '
                     f"{escape(reason)}</title></rect>")
        if x1 - x0 > 60:
            drawn.append(f'<text x="{(x0 + x1) / 2:.1f}" y="76" text-anchor="middle">{escape(state)}</text>')
    drawn.append(f'<text x="{LEFT}" y="14">{_when(start)}</text>'
                 f'<text x="{WIDTH - RIGHT}" y="14" text-anchor="end">{_when(end)}</text>')
    return _figure("History", "".join(drawn), 84, dict.fromkeys(c[0] for c in changes))
