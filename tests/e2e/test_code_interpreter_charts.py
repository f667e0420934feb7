"""Issue 16: chart data of matplotlib figures, parsed by the official `e2b_code_interpreter` SDK into
`Result.chart` (its `charts` classes), one test per chart type: the values the SDK hands the user are the data the
code plotted. Plus what is not a chart: a figure with nothing drawn has none, an unrecognised one is `unknown`.
run.sh builds `code-interpreter-v1` before the tests."""

from __future__ import annotations

import pytest
from e2b_code_interpreter import Sandbox as CodeInterpreter
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
    ScatterChart,
    SuperChart,
)

from conftest import RUN_ID

PLT = "import matplotlib.pyplot as plt\n"


@pytest.fixture(scope="module")
def ci(api) -> CodeInterpreter:
    sbx = CodeInterpreter.create(timeout=600, metadata={"e2e-run": RUN_ID, "role": "ci-charts"}, request_timeout=1800)
    try:
        yield sbx
    finally:
        api.delete(f"/sandboxes/{sbx.sandbox_id}")


def chart_of(ci, code: str):
    """The one figure `code` shows: its chart (None when it has none); the PNG travels beside it."""
    execution = ci.run_code(PLT + code + "\nplt.show()")
    assert execution.error is None, execution.error
    figures = [r for r in execution.results if r.png]
    assert len(figures) == 1, execution.results
    return figures[0].chart


def test_line_chart_points_are_the_data(ci):
    chart = chart_of(
        ci,
        "plt.plot([1, 2, 3], [1, 4, 9], label='squares')\nplt.plot([1, 2, 3], [2, 2, 2])\n"
        "plt.title('growth')\nplt.xlabel('time (s)')\nplt.ylabel('size [m]')",
    )
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert chart.title == "growth"
    assert (chart.x_label, chart.x_unit, chart.y_label, chart.y_unit) == ("time (s)", "s", "size [m]", "m")
    assert [e.label for e in chart.elements][0] == "squares"
    assert chart.elements[0].points == [(1, 1), (2, 4), (3, 9)]
    assert chart.elements[1].points == [(1, 2), (2, 2), (3, 2)]
    assert chart.x_scale == ScaleType.LINEAR and chart.y_scale == ScaleType.LINEAR
    assert len(chart.x_ticks) == len(chart.x_tick_labels) > 0
    assert all(isinstance(t, float) for t in chart.x_ticks)


def test_line_chart_of_categories_and_dates(ci):
    chart = chart_of(ci, "plt.plot(['a', 'b', 'c'], [3, 1, 2])\nplt.yscale('log')")
    assert chart.x_scale == ScaleType.CATEGORICAL and chart.y_scale == ScaleType.LOG
    assert chart.elements[0].points == [("a", 3), ("b", 1), ("c", 2)]
    dated = chart_of(ci, "import datetime\nplt.plot([datetime.date(2024, 1, 1), datetime.date(2024, 1, 2)], [5, 6])")
    assert dated.x_scale == ScaleType.DATETIME
    assert dated.elements[0].points == [("2024-01-01", 5), ("2024-01-02", 6)]
    assert all(isinstance(t, str) and t[:4].isdigit() for t in dated.x_ticks)


def test_scatter_chart_points_are_the_data(ci):
    chart = chart_of(ci, "plt.scatter([1, 2, 3], [4, 5, 6], label='obs')\nplt.xlabel('x')")
    assert isinstance(chart, ScatterChart) and chart.type == ChartType.SCATTER
    assert chart.x_label == "x" and chart.y_label is None
    assert [(e.label, e.points) for e in chart.elements] == [("obs", [(1, 4), (2, 5), (3, 6)])]


def test_bar_chart_has_label_group_and_value(ci):
    chart = chart_of(
        ci,
        "import numpy as np\nx = np.arange(3)\n"
        "plt.bar(x - 0.2, [1, 2, 3], 0.4, label='2023')\nplt.bar(x + 0.2, [4, 5, 6], 0.4, label='2024')\n"
        "plt.xticks(x, ['north', 'south', 'east'])\nplt.title('sales')\nplt.ylabel('units')",
    )
    assert isinstance(chart, BarChart) and chart.type == ChartType.BAR
    assert chart.title == "sales" and chart.y_label == "units"
    assert [(e.label, e.group, e.value) for e in chart.elements] == [
        ("north", "2023", 1), ("south", "2023", 2), ("east", "2023", 3),
        ("north", "2024", 4), ("south", "2024", 5), ("east", "2024", 6),
    ]  # fmt: skip
    horizontal = chart_of(ci, "plt.barh(['a', 'b'], [5, 7])\nplt.xlabel('amount')")
    # x names the categories, as for vertical bars
    assert horizontal.y_label == "amount" and horizontal.x_label is None
    assert [(e.label, e.value) for e in horizontal.elements] == [("a", 5), ("b", 7)]


def test_pie_chart_angles_follow_the_shares(ci):
    chart = chart_of(ci, "plt.pie([1, 1, 2], labels=['x', 'y', 'z'])\nplt.title('share')")
    assert isinstance(chart, PieChart) and chart.type == ChartType.PIE
    assert chart.title == "share"
    assert [(e.label, e.angle, e.radius) for e in chart.elements] == [("x", 90, 1), ("y", 90, 1), ("z", 180, 1)]


def test_box_and_whisker_chart_has_the_quartiles_and_outliers(ci):
    chart = chart_of(
        ci, "plt.boxplot([[1, 2, 3, 4, 5, 20], [2, 3, 4, 5, 6]], labels=['A', 'B'], patch_artist=True)"
    )
    assert isinstance(chart, BoxAndWhiskerChart) and chart.type == ChartType.BOX_AND_WHISKER
    a, b = chart.elements
    # numpy's quartiles of [1, 2, 3, 4, 5, 20]: 2.25, 3.5, 4.75; 20 is beyond Q3 + 1.5 IQR
    assert (a.label, a.min, a.first_quartile, a.median, a.third_quartile, a.max) == ("A", 1, 2.25, 3.5, 4.75, 5)
    assert a.outliers == [20]
    assert (b.label, b.min, b.first_quartile, b.median, b.third_quartile, b.max, b.outliers) == (
        "B", 2, 3, 4, 5, 6, []
    )  # fmt: skip
    sideways = chart_of(
        ci, "plt.boxplot([[1, 2, 3, 4, 5, 20]], labels=['A'], patch_artist=True, vert=False)"
    )
    s = sideways.elements[0]
    assert (s.label, s.min, s.median, s.max, s.outliers) == ("A", 1, 3.5, 5, [20])


def test_a_figure_of_several_axes_is_a_superchart(ci):
    chart = chart_of(
        ci,
        "fig, axs = plt.subplots(1, 2)\nfig.suptitle('both')\naxs[0].plot([1, 2], [3, 4])\n"
        "axs[0].set_title('line')\naxs[1].scatter([5], [6])",
    )
    assert isinstance(chart, SuperChart) and chart.type == ChartType.SUPERCHART
    assert chart.title == "both"
    line, scatter = chart.elements
    assert isinstance(line, LineChart) and line.title == "line" and line.elements[0].points == [(1, 3), (2, 4)]
    assert isinstance(scatter, ScatterChart) and scatter.elements[0].points == [(5, 6)]


def test_what_is_not_a_chart(ci):
    assert chart_of(ci, "plt.subplots()") is None, "a figure with nothing drawn has no chart"
    unknown = chart_of(ci, "fig, ax = plt.subplots()\nax.add_patch(plt.Circle((0, 0), 1))\nax.set_title('ring')")
    assert unknown.type == ChartType.UNKNOWN and unknown.title == "ring" and unknown.elements == []
    # a figure the extractor cannot read is still shown as its PNG (chart_of asserts the PNG)
    assert chart_of(ci, "plt.imshow([[0, 1], [1, 0]])").type == ChartType.UNKNOWN
