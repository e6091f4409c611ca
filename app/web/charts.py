"""Geometry of the dashboard's horizontal bar charts (drawn as inline SVG by the template)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LABEL_WIDTH = 150
BAR_AREA = 300
VALUE_WIDTH = 70
ROW_HEIGHT = 28
BAR_HEIGHT = 18
PADDING = 8


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    y: int
    width: int


@dataclass(frozen=True, slots=True)
class BarChart:
    title: str
    bars: list[Bar]
    width: int
    height: int
    label_width: int = LABEL_WIDTH
    bar_height: int = BAR_HEIGHT

    @property
    def total(self) -> int:
        return sum(b.value for b in self.bars)

    @property
    def description(self) -> str:
        """The data as text, for screen readers."""
        return "; ".join(f"{b.label}: {b.value}" for b in self.bars) or "no data"


def bar_chart(title: str, rows: Sequence[tuple[str, int]]) -> BarChart:
    """Bars scaled to the largest value; a non-zero value always gets a visible bar."""
    peak = max((value for _, value in rows), default=0)
    bars = []
    for index, (label, value) in enumerate(rows):
        width = 0 if peak == 0 else max(2 if value else 0, round(BAR_AREA * value / peak))
        bars.append(Bar(label=label, value=value, y=PADDING + index * ROW_HEIGHT, width=width))
    height = PADDING * 2 + max(len(bars), 1) * ROW_HEIGHT
    return BarChart(title=title, bars=bars, width=LABEL_WIDTH + BAR_AREA + VALUE_WIDTH, height=height)
