"""Server-rendered SVG charts (no JavaScript library, works offline)."""

from __future__ import annotations

from typing import Sequence

from markupsafe import Markup

__all__ = ["per_minute_svg"]

_W, _H, _PAD = 720, 160, 24


def per_minute_svg(minutes: Sequence[tuple[int, int, int]]) -> Markup:
    """Bars of jobs processed (and, stacked in red, failed) per minute, oldest left."""
    n = max(len(minutes), 1)
    top = max([p + f for _, p, f in minutes] + [1])
    bw = (_W - 2 * _PAD) / n
    parts = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
             f'aria-label="jobs processed and failed per minute, last {n} minutes">',
             f'<text x="{_PAD}" y="14" class="axis">{top}/min</text>',
             f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" class="base"/>']
    span = _H - 2 * _PAD
    for i, (minute, ok, failed) in enumerate(minutes):
        x = _PAD + i * bw
        h_ok = span * ok / top
        h_f = span * failed / top
        y = _H - _PAD
        if ok:
            parts.append(f'<rect class="ok" x="{x:.1f}" y="{y - h_ok:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{h_ok:.1f}"><title>{ok} processed</title></rect>')
        if failed:
            parts.append(f'<rect class="failed" x="{x:.1f}" y="{y - h_ok - h_f:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{h_f:.1f}"><title>{failed} failed</title></rect>')
    parts.append(f'<text x="{_PAD}" y="{_H - 6}" class="axis">-{n} min</text>')
    parts.append(f'<text x="{_W - _PAD}" y="{_H - 6}" class="axis" text-anchor="end">now</text></svg>')
    return Markup("".join(parts))
