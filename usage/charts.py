"""Stacked bar charts as SVG geometry, computed here and drawn by the template (no chart library, no script):
one bar per day or week, one segment per stack, axes with three ticks, and every value in a <title> and an
aria-label that hover and keyboard focus reveal."""

import math

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 84, 8, 14, 34
SERIES_COLOURS = 8  # .series-0 … .series-7 in app.css


def money(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:,.4f}"


def number(value: float) -> str:
    return f"{value:,.0f}"


def compact(value: float, *, money_values: bool) -> str:
    """An axis tick: $2.50, $1.2k, 800, 20M (the exact values are in each bar's title and the table)."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            text = f"{value / size:.1f}".removesuffix(".0") + suffix
            return f"${text}" if money_values else text
    return money(value) if money_values else number(value)


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above value (an axis top that reads well)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def stacked_bars(series: dict, *, money_values: bool) -> dict:
    fmt = money if money_values else number
    rows, labels = series["rows"], series["labels"]
    top = _nice_ceiling(max((row["total"] for row in rows), default=0))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(rows), 1)
    bar = max(slot * 0.78, 1.0)
    bars = []
    for index, row in enumerate(rows):
        x, floor = LEFT + index * slot + (slot - bar) / 2, TOP + plot_height
        segments = []
        for number_, (label, value) in enumerate(zip(labels, row["values"])):
            if value <= 0:
                continue
            height = value / top * plot_height
            floor -= height
            segments.append({"x": round(x, 2), "y": round(floor, 2), "width": round(bar, 2),
                             "height": round(max(height, 0.5), 2), "series": number_ % SERIES_COLOURS})
        parts = [f"{label}: {fmt(value)}" for label, value in zip(labels, row["values"]) if value]
        bars.append({"segments": segments, "x": round(x, 2), "width": round(bar, 2),
                     "text": f"{row['bucket']:%Y-%m-%d}: {fmt(row['total'])}" + (f" ({'; '.join(parts)})" if parts
                                                                                    else "")})
    ticks = [{"y": round(TOP + plot_height - share * plot_height, 2), "label": compact(top * share,
                                                                                     money_values=money_values)}
             for share in (0, 0.5, 1)]
    picks = sorted({0, len(rows) // 2, len(rows) - 1}) if rows else []
    # The first label starts at its bar and the last ends at its bar, so neither is cut at the edge.
    anchors = {0: "start", len(rows) - 1: "end"} if len(rows) > 1 else {}
    x_labels = [{"x": round(LEFT + i * slot + (0 if anchors.get(i) == "start" else slot if anchors.get(i) == "end"
                                                else slot / 2), 2),
                 "label": f"{rows[i]['bucket']:%b %d}", "anchor": anchors.get(i, "middle")} for i in picks]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "base": TOP + plot_height,
            "bars": bars, "ticks": ticks, "x_labels": x_labels, "x_label_y": HEIGHT - 8,
            "legend": [{"label": label, "series": i % SERIES_COLOURS} for i, label in enumerate(labels)]}
