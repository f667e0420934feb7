"""Chart data from matplotlib figures: the `chart` of a result, in the shapes E2B's SDKs parse (`charts.py` of
`e2b_code_interpreter`, `charts.ts` of `@e2b/code-interpreter`): line, scatter, bar, pie, box_and_whisker,
superchart (a figure of several axes) and unknown (axes whose artists fit none of those).

Runs inside the Python kernel (python_startup.py registers it as the `e2b/chart` formatter of `Figure`), so it
only reads the figure: it never draws or changes it. Every value is plain JSON (no NaN: JavaScript's JSON.parse
refuses it), so the NDJSON line stays readable by both SDKs."""

from __future__ import annotations

import datetime
import math
import re
from typing import Any, Optional

import numpy as np
from matplotlib import category, dates
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import PathPatch, Rectangle, Wedge
from matplotlib.text import Text

# A unit in an axis label: "Time (s)" → s, "Mass [kg]" → kg.
UNIT = re.compile(r"\(([^()]+)\)|\[([^\[\]]+)\]")
# Float noise of matplotlib's geometry (a pie's 90° wedge is 90.00000000000001°).
DIGITS = 10


def figure_chart(figure: Figure) -> Optional[dict[str, Any]]:
    """The chart of `figure`; None when it has nothing drawn (no axes, or one empty axes)."""
    axes = [ax for ax in figure.get_axes() if ax.get_visible()]
    if not axes:
        return None
    if len(axes) == 1:
        return axes_chart(axes[0]) if _artists(axes[0]) else None
    suptitle = getattr(figure, "_suptitle", None)
    title = suptitle.get_text() if suptitle is not None else ""
    return {"type": "superchart", "title": title or None, "elements": [axes_chart(ax) for ax in axes]}


def axes_chart(ax: Axes) -> dict[str, Any]:
    artists = _artists(ax)
    if artists and all(isinstance(a, Line2D) for a in artists):
        return _line_chart(ax)
    if any(isinstance(a, PathPatch) for a in artists) and all(isinstance(a, (PathPatch, Line2D)) for a in artists):
        return _box_chart(ax)
    if artists and all(isinstance(a, PathCollection) for a in artists):
        return _scatter_chart(ax)
    if artists and all(isinstance(a, Wedge) for a in artists):
        return _pie_chart(ax)
    if ax.containers and all(isinstance(a, Rectangle) for a in artists):
        return _bar_chart(ax)
    return {"type": "unknown", "title": _title(ax), "elements": []}


def _artists(ax: Axes) -> list[Any]:
    """What was drawn on `ax`: its children but texts (a pie's labels, annotations: decoration, not data)."""
    children = getattr(ax, "_children", None)
    if children is None:  # matplotlib < 3.5: get_children() also lists the axes' own spines, axis, background
        machinery = {id(ax.patch), id(ax.xaxis), id(ax.yaxis), id(ax.legend_), *(id(s) for s in ax.spines.values())}
        children = [a for a in ax.get_children() if id(a) not in machinery]
    return [a for a in children if not isinstance(a, Text) and a.get_visible()]


def _title(ax: Axes) -> Optional[str]:
    return ax.get_title() or None


def _axis_labels(ax: Axes, swap: bool = False) -> dict[str, Any]:
    x_label, y_label = ax.get_xlabel() or None, ax.get_ylabel() or None
    if swap:  # horizontal bars and boxes: x names the categories, as for vertical ones
        x_label, y_label = y_label, x_label
    return {"x_label": x_label, "y_label": y_label, "x_unit": _unit(x_label), "y_unit": _unit(y_label)}


def _unit(label: Optional[str]) -> Optional[str]:
    match = UNIT.search(label or "")
    return (match.group(1) or match.group(2)).strip() if match else None


def _json_value(value: Any) -> Any:
    """A data value as JSON: numbers as floats, dates as ISO 8601, categories as their strings."""
    if isinstance(value, (str, np.str_)):
        return str(value)
    if isinstance(value, np.datetime64):
        return str(value.astype("datetime64[s]"))
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def _rounded(value: float) -> Optional[float]:
    value = float(value)
    return round(value, DIGITS) if math.isfinite(value) else None


def _scale(axis: Any, scale: str) -> str:
    converter = axis.converter
    if isinstance(converter, (dates.DateConverter, dates.ConciseDateConverter, dates._SwitchableDateConverter)):
        return "datetime"
    if isinstance(converter, category.StrCategoryConverter):
        return "categorical"
    return scale


def _axis_value(axis: Any, scale: str, number: float) -> Any:
    """A position on `axis` as the user's data: a date, a category's name, or the number."""
    if scale == "datetime":
        return dates.num2date(number).isoformat()
    if scale == "categorical" and axis.units is not None:
        names = {index: name for name, index in axis.units._mapping.items()}
        return names.get(int(round(number)), _json_value(number))
    return _json_value(number)


def _ticks(ax: Axes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, axis, scale_name in (("x", ax.xaxis, ax.get_xscale()), ("y", ax.yaxis, ax.get_yscale())):
        scale = _scale(axis, scale_name)
        ticks = axis.get_ticklocs()
        out[f"{name}_ticks"] = [
            dates.num2date(t).isoformat() if scale == "datetime" else _rounded(t) for t in ticks
        ]
        out[f"{name}_tick_labels"] = [label.get_text() for label in axis.get_ticklabels()]
        out[f"{name}_scale"] = scale
    return out


def _series_label(label: str, kind: str, number: int) -> str:
    # matplotlib names an unlabelled artist "_childN" (or "_lineN", "_collectionN"): say what it is instead.
    return f"{kind} {number}" if not label or label.startswith("_") else label


def _line_chart(ax: Axes) -> dict[str, Any]:
    elements = []
    for i, line in enumerate(ax.get_lines()):
        xs, ys = line.get_xdata(orig=True), line.get_ydata(orig=True)
        points = [[_json_value(x), _json_value(y)] for x, y in zip(np.asarray(xs), np.asarray(ys))]
        elements.append({"label": _series_label(line.get_label(), "Line", i), "points": points})
    return {"type": "line", "title": _title(ax), **_axis_labels(ax), **_ticks(ax), "elements": elements}


def _scatter_chart(ax: Axes) -> dict[str, Any]:
    x_scale, y_scale = _scale(ax.xaxis, ax.get_xscale()), _scale(ax.yaxis, ax.get_yscale())
    elements = []
    for i, collection in enumerate(ax.collections):
        points = [
            [_axis_value(ax.xaxis, x_scale, x), _axis_value(ax.yaxis, y_scale, y)]
            for x, y in np.asarray(collection.get_offsets())
        ]
        elements.append({"label": _series_label(collection.get_label(), "Series", i), "points": points})
    return {"type": "scatter", "title": _title(ax), **_axis_labels(ax), **_ticks(ax), "elements": elements}


def _category_label(axis: Any, scale_name: str, center: float) -> str:
    """The name of the category at `center` on `axis`: its category, else the tick label nearest it, else the
    number (bars and boxes are placed at their category's tick; grouped bars sit around it)."""
    scale = _scale(axis, scale_name)
    if scale in ("categorical", "datetime"):
        return str(_axis_value(axis, scale, center))
    ticks = list(axis.get_ticklocs())
    labels = [label.get_text() for label in axis.get_ticklabels()]
    if ticks and len(labels) == len(ticks):
        spacing = min((b - a for a, b in zip(ticks, ticks[1:])), default=1.0)
        nearest = min(range(len(ticks)), key=lambda i: abs(ticks[i] - center))
        if abs(ticks[nearest] - center) < spacing / 2 and labels[nearest]:
            return labels[nearest]
    value = _rounded(center)
    return str(int(value)) if value is not None and value.is_integer() else str(value)


def _bar_chart(ax: Axes) -> dict[str, Any]:
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    horizontal = bool(containers) and all(getattr(c, "orientation", "vertical") == "horizontal" for c in containers)
    elements = []
    for i, container in enumerate(containers):
        group = container.get_label()
        group = f"Group {i}" if not group or group.startswith("_") else group
        values = getattr(container, "datavalues", None)
        for j, bar in enumerate(container.patches):
            if horizontal:
                center, scale, axis = bar.get_y() + bar.get_height() / 2, ax.get_yscale(), ax.yaxis
                value = bar.get_width()
            else:
                center, scale, axis = bar.get_x() + bar.get_width() / 2, ax.get_xscale(), ax.xaxis
                value = bar.get_height()
            if values is not None and j < len(values):
                value = values[j]  # the bar's own value, not its drawn extent (a stacked bar starts above 0)
            label = _category_label(axis, scale, center)
            elements.append({"label": label, "group": group, "value": _json_value(value)})
    return {"type": "bar", "title": _title(ax), **_axis_labels(ax, swap=horizontal), "elements": elements}


def _pie_chart(ax: Axes) -> dict[str, Any]:
    elements = [
        {"label": wedge.get_label(), "angle": _rounded(abs(wedge.theta2 - wedge.theta1)), "radius": _rounded(wedge.r)}
        for wedge in ax.patches
        if isinstance(wedge, Wedge)
    ]
    return {"type": "pie", "title": _title(ax), "elements": elements}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _box_chart(ax: Axes) -> dict[str, Any]:
    """A box plot drawn with `patch_artist=True` (its boxes are PathPatches; without it a box plot is only lines,
    which reads as a line chart, as in E2B): each box is Q1..Q3, the full-width line inside it the median, the
    whiskers (lines along the box's centre) reach min and max, the marker-only lines there are the outliers."""
    boxes = []
    for patch in ax.patches:
        if not isinstance(patch, PathPatch):
            continue
        vertices = patch.get_path().vertices
        boxes.append((vertices[:, 0].min(), vertices[:, 0].max(), vertices[:, 1].min(), vertices[:, 1].max()))
    # Vertical boxes (the default) stand on the x axis's ticks; horizontal ones (vert=False) on the y axis's.
    x_ticks = list(ax.get_xticks())
    vertical = all(any(_close((x0 + x1) / 2, t) for t in x_ticks) for x0, x1, _, _ in boxes)
    lines = []
    for line in ax.get_lines():
        xs, ys = np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)
        # (position along the category axis, value) pairs, whatever the orientation
        lines.append((line, (xs, ys) if vertical else (ys, xs)))
    elements = []
    for x0, x1, y0, y1 in boxes:
        low, high, q1, q3 = (x0, x1, y0, y1) if vertical else (y0, y1, x0, x1)
        center = (low + high) / 2
        box = {"min": q1, "first_quartile": q1, "median": None, "third_quartile": q3, "max": q3, "outliers": []}
        for line, (pos, val) in lines:
            if len(pos) == 0 or not all(low - 1e-9 <= p <= high + 1e-9 for p in pos):
                continue
            if line.get_linestyle() in ("None", " ", "") and line.get_marker() not in (None, "None", "", " "):
                box["outliers"].extend(_rounded(v) for v in val)
            elif len(pos) == 2 and _close(val[0], val[1]) and _close(pos[0], low) and _close(pos[1], high):
                box["median"] = _rounded(val[0])
            elif len(pos) == 2 and _close(pos[0], center) and _close(pos[1], center):
                lo, hi = sorted(val)
                if hi <= q1 + 1e-9:
                    box["min"] = lo
                elif lo >= q3 - 1e-9:
                    box["max"] = hi
        axis, scale = (ax.xaxis, ax.get_xscale()) if vertical else (ax.yaxis, ax.get_yscale())
        elements.append(
            {
                "label": _category_label(axis, scale, center),
                **{k: _rounded(v) if isinstance(v, (float, np.floating)) else v for k, v in box.items()},
            }
        )
    return {"type": "box_and_whisker", "title": _title(ax), **_axis_labels(ax, swap=not vertical), "elements": elements}
