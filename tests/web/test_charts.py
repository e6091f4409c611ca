"""Bar-chart geometry for the dashboard (no database)."""

from __future__ import annotations

from app.web.charts import BAR_AREA, ROW_HEIGHT, bar_chart


def test_bars_scale_to_the_largest_value_and_stack_vertically():
    chart = bar_chart("By reason", [("hard_bounce", 10), ("complaint", 5), ("role", 0)])
    assert [b.width for b in chart.bars] == [BAR_AREA, BAR_AREA // 2, 0]
    assert [b.y for b in chart.bars] == [8, 8 + ROW_HEIGHT, 8 + 2 * ROW_HEIGHT]
    assert chart.total == 15
    assert chart.description == "hard_bounce: 10; complaint: 5; role: 0"
    assert chart.height == 16 + 3 * ROW_HEIGHT


def test_a_tiny_value_still_shows_and_no_data_is_described():
    chart = bar_chart("By source", [("import", 10_000), ("manual", 1)])
    assert chart.bars[1].width == 2
    empty = bar_chart("Nothing", [])
    assert empty.bars == [] and empty.description == "no data" and empty.height > 0
