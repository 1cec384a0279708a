"""Charts drawn on the server as SVG: nothing to download, readable without scripts.
Each chart has a title for screen readers, and its page shows the same figures as a
table beside it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Series:
    key: str  # e.g. a status
    label: str
    colour: str  # at least 4.5:1 against white, so the legend's squares read too


# Messages per day: statuses folded into what staff care about.
DAY_SERIES = (
    Series("delivered", "Delivered or read", "#1a7f37"),
    Series("sent", "Sent, not yet confirmed", "#0550ae"),
    Series("failed", "Failed or undelivered", "#cf222e"),
    Series("expired", "Expired or cancelled", "#57606a"),
    Series("pending", "Scheduled, held or sending", "#9a6700"),
)
FOLD = {
    "delivered": "delivered",
    "read": "delivered",
    "queued": "sent",
    "sent": "sent",
    "failed": "failed",
    "undelivered": "failed",
    "expired": "expired",
    "cancelled": "expired",
    "scheduled": "pending",
    "held": "pending",
    "sending": "pending",
}

WIDTH, HEIGHT = 720, 240
LEFT, BOTTOM, TOP = 48, 28, 12


def fold(statuses: dict[str, int]) -> dict[str, int]:
    folded: dict[str, int] = {}
    for status, count in statuses.items():
        key = FOLD.get(status, "pending")
        folded[key] = folded.get(key, 0) + count
    return folded


def per_day(days: dict[date, dict[str, int]], title: str) -> Markup:
    """Stacked bars, one per day, in the order of `DAY_SERIES`."""
    folded = {day: fold(statuses) for day, statuses in days.items()}
    highest = max((sum(v.values()) for v in folded.values()), default=0)
    peak = max(highest + highest % 2, 2)  # even, so the middle gridline is a whole number
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(folded), 1)
    parts = [_axis(peak, plot_h)]
    for n, (day, counts) in enumerate(sorted(folded.items())):
        x, y = LEFT + n * step, float(TOP + plot_h)
        for series in DAY_SERIES:
            count = counts.get(series.key, 0)
            if not count:
                continue
            h = count / peak * plot_h
            y -= h
            tip = f"{day:%d %b}: {count} {series.label.lower()}"
            parts.append(
                f'<rect class="bar" x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{series.colour}"><title>{escape(tip)}</title></rect>'
            )
        if n % 5 == 0 or n == len(folded) - 1:
            anchor = "end" if n == len(folded) - 1 else "middle"
            at = x + step if anchor == "end" else x + step / 2
            parts.append(
                f'<text x="{at:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{day:%d %b}</text>'
            )
    return _svg(title, "".join(parts), HEIGHT) + legend(DAY_SERIES)


def rates(rows: Sequence[tuple[str, float, str]], title: str, colour: str) -> Markup:
    """Horizontal bars of rates from 0 to 1: (label, rate, caption) per row."""
    row_h, label_w = 30, 200
    height = TOP + row_h * max(len(rows), 1) + 8
    bar_w = WIDTH - label_w - 140
    parts = []
    for n, (label, rate, caption) in enumerate(rows):
        y = TOP + n * row_h
        w = max(min(rate, 1.0), 0.0) * bar_w
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 18}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w}" height="20" fill="#eaeef2"/>'
            f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{w:.1f}" height="20" '
            f'fill="{colour}"><title>{escape(label)}: {escape(caption)}</title></rect>'
            f'<text x="{label_w + bar_w + 8}" y="{y + 18}">{escape(caption)}</text>'
        )
    if not rows:
        parts.append(f'<text x="{LEFT}" y="{TOP + 18}">Nothing in this period.</text>')
    return _svg(title, "".join(parts), height)


def legend(series: Sequence[Series]) -> Markup:
    items = "".join(
        f'<li><span class="swatch" style="background:{s.colour}"></span>{escape(s.label)}</li>'
        for s in series
    )
    return Markup(f'<ul class="legend">{items}</ul>')  # noqa: S704 - built from escaped parts


def _axis(peak: int, plot_h: float) -> str:
    lines = []
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h - fraction * plot_h
        lines.append(
            f'<line x1="{LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{round(peak * fraction)}</text>"
        )
    return "".join(lines)


def _svg(title: str, body: str, height: int) -> Markup:
    return Markup(  # noqa: S704 - every text in `body` was escaped where it was added
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )
