"""The atlas: the map of every indexed spectrum, its points, and which one was clicked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..spectrum import SpectrumError
from .common import _SURVEY_COLOURS, CONTINUOUS, LABELS, _cycle, as_float


def index_contents(metadata: pd.DataFrame) -> pd.DataFrame:
    """Spectra per survey, split by class and by real/simulated (for the landing page)."""
    frame = pd.DataFrame({
        "survey": metadata["survey"].astype(str),
        "class": metadata["class"].astype(object).where(metadata["class"].notna(), "unknown")
        if "class" in metadata else "unknown",
        "origin": metadata["origin"].astype(object).where(metadata["origin"].notna(), "unknown")
        if "origin" in metadata else "unknown",
    })
    table = pd.crosstab(frame["survey"], frame["class"].astype(str))
    table["real"] = (frame["origin"] == "real").groupby(frame["survey"]).sum()
    table["simulated"] = (frame["origin"] == "simulated").groupby(frame["survey"]).sum()
    table["total"] = frame.groupby("survey").size()
    return table.sort_values("total", ascending=False).reset_index()


def index_contents_of(index) -> pd.DataFrame:
    """:func:`index_contents` of an index. A large one is told by the build's counts, or
    counted in Parquet (pyarrow's group-by over the three columns), so no row of it comes
    into pandas."""
    if index.metadata_loaded:
        return index_contents(index.metadata)
    counts = index.manifest.get("counts", {})
    if isinstance(counts.get("survey_class"), dict) and isinstance(counts.get("survey_origin"), dict):
        return _contents_table(_split_counts(counts["survey_class"], "class"),
                               _split_counts(counts["survey_origin"], "origin"))
    names = [c for c in ("survey", "class", "origin") if c in index.column_names]
    groups = index.metadata_table(names).group_by(names).aggregate([([], "count_all")]).to_pandas()
    groups = groups.rename(columns={"count_all": "n"})
    for name in ("class", "origin"):
        groups[name] = groups[name].astype(object).where(groups[name].notna(), "unknown").astype(str) \
            if name in groups else "unknown"
    return _contents_table(groups[["survey", "class", "n"]], groups[["survey", "origin", "n"]])


def _split_counts(counts: dict, name: str) -> pd.DataFrame:
    """A build's "survey|value" counts as (survey, ``name``, n) rows; "-" is unknown."""
    rows = [(*str(key).partition("|")[::2], int(n)) for key, n in counts.items()]
    frame = pd.DataFrame(rows, columns=["survey", name, "n"])
    frame[name] = frame[name].where(~frame[name].isin(["-", ""]), "unknown")
    return frame


def _contents_table(by_class: pd.DataFrame, by_origin: pd.DataFrame) -> pd.DataFrame:
    """:func:`index_contents` from counts per (survey, class) and per (survey, origin)."""
    table = by_class.pivot_table(index="survey", columns="class", values="n", aggfunc="sum", fill_value=0)
    for origin in ("real", "simulated"):
        table[origin] = by_origin[by_origin["origin"] == origin].groupby("survey")["n"].sum() \
            .reindex(table.index, fill_value=0)
    table["total"] = by_class.groupby("survey")["n"].sum()
    table.columns.name = "class"
    return table.sort_values("total", ascending=False).reset_index()


def index_values(index, column: str) -> list[str]:
    """The distinct values of a metadata column (surveys, classes), sorted: from the
    manifest's counts when the build recorded them, else read from the column."""
    counts = index.manifest.get("counts", {}).get(column)
    if isinstance(counts, dict) and counts:
        return sorted(str(k) for k in counts if str(k) not in ("-", "unknown", "", "None", "nan"))
    if column not in index.column_names:
        return []
    return sorted(index.columns([column])[column].dropna().astype(str).unique())


# -- the atlas -------------------------------------------------------------------------------

#: Above this many indexed spectra the map draws the density of all of them and a sample as
#: points (SPECTOK_MAP_POINTS): a browser draws a few tens of thousands of WebGL markers well,
#: not millions.
MAP_POINTS = 50_000


def map_points_limit() -> int:
    import os

    try:
        return max(1, int(os.environ.get("SPECTOK_MAP_POINTS", MAP_POINTS)))
    except ValueError:
        return MAP_POINTS


def map_sample(n: int, limit: int | None = None, keep=(), seed: int = 0) -> np.ndarray:
    """Sorted index rows drawn as points: all of them up to ``limit``, else a fixed random
    sample of ``limit`` (the same on every rerun) plus the rows in ``keep`` (the selection)."""
    limit = map_points_limit() if limit is None else limit
    if n <= limit:
        return np.arange(n)
    rows = np.random.default_rng(seed).choice(n, limit, replace=False)
    keep = [int(r) for r in keep if r is not None and 0 <= int(r) < n]
    return np.unique(np.concatenate([rows, np.asarray(keep, np.int64)]))


def map_density(coords: np.ndarray, bins: int = 160) -> dict:
    """Counts of every map point on a ``bins`` x ``bins`` grid (read in blocks, so a
    memory-mapped 10^7-row map is never copied whole): for :func:`map_figure`."""
    coords = np.asarray(coords)  # a memmap stays one: nothing is read until the blocks below
    n = len(coords)
    if n == 0:
        raise SpectrumError("the map has no points")
    low, high = np.full(2, np.inf), np.full(2, -np.inf)
    block = 1 << 20
    for start in range(0, n, block):
        part = np.asarray(coords[start : start + block], np.float64)
        part = part[np.isfinite(part).all(axis=1)]
        if len(part):
            low, high = np.minimum(low, part.min(axis=0)), np.maximum(high, part.max(axis=0))
    if not np.isfinite(low).all():
        raise SpectrumError("the map has no finite coordinates")
    high = np.where(high > low, high, low + 1.0)
    counts = np.zeros((bins, bins), np.int64)
    for start in range(0, n, block):
        part = np.asarray(coords[start : start + block], np.float64)
        counts += np.histogram2d(part[:, 0], part[:, 1], bins=bins,
                                 range=[[low[0], high[0]], [low[1], high[1]]])[0].astype(np.int64)
    x = np.linspace(low[0], high[0], bins + 1)
    y = np.linspace(low[1], high[1], bins + 1)
    return {"counts": counts, "x": 0.5 * (x[1:] + x[:-1]), "y": 0.5 * (y[1:] + y[:-1]), "n": n}


def map_frame(metadata: pd.DataFrame, coords: np.ndarray) -> pd.DataFrame:
    """Metadata plus map coordinates x, y and the index row, one row per indexed spectrum."""
    frame = metadata.reset_index(drop=True).copy()
    coords = np.asarray(coords, np.float64)
    if coords.shape != (len(frame), 2):
        raise SpectrumError(f"map coordinates have shape {coords.shape}, expected ({len(frame)}, 2)")
    frame["x"], frame["y"] = coords[:, 0], coords[:, 1]
    if "row" not in frame:
        frame["row"] = np.arange(len(frame))
    for key in CONTINUOUS:
        if key in frame:
            frame[key] = pd.to_numeric(frame[key], errors="coerce")
    return frame


def _hover(frame: pd.DataFrame) -> list[str]:
    """Hover text per point (vectorised: an index may hold a million points)."""
    def text(column: str) -> pd.Series:
        if column not in frame:
            return pd.Series("", index=frame.index)
        return frame[column].astype(object).where(frame[column].notna(), "").astype(str)

    out = text("survey") + " " + text("object_id") + "<br>" + text("class")
    for key, fmt in (("z", " z={:.3f}"), ("teff", " Teff={:.0f}")):
        if key in frame:
            values = pd.to_numeric(frame[key], errors="coerce")
            out = out + values.map(lambda v, f=fmt: "" if pd.isna(v) else f.format(v))
    return out.tolist()


def map_figure(frame: pd.DataFrame, colour: str = "survey", query_xy: tuple[float, float] | None = None,
               highlight_row: int | None = None, height: int = 620, method: str = "UMAP",
               density: dict | None = None):
    """The UMAP atlas (WebGL): one trace per category, or a colour scale; customdata = row.

    ``density`` (:func:`map_density` of every indexed spectrum) is drawn beneath the
    points as a grey heat map of log counts: with a sampled ``frame``, the map still
    shows where all the spectra are.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    if density is not None:
        counts = density["counts"].T.astype(float)  # Heatmap: rows are y
        fig.add_trace(go.Heatmap(
            x=density["x"], y=density["y"], z=np.where(counts > 0, np.log10(np.maximum(counts, 1)), np.nan),
            customdata=counts, colorscale="Greys", showscale=False, name=f"all {density['n']:,}",
            hovertemplate="%{customdata:,} spectra here<extra></extra>", zmin=0, opacity=0.6))
    marker_size = 4 if len(frame) > 20000 else 6
    if colour in frame and colour in CONTINUOUS:
        values = pd.to_numeric(frame[colour], errors="coerce")
        known = values.notna()
        if (~known).any():
            rest = frame[~known]
            fig.add_trace(go.Scattergl(
                x=rest["x"], y=rest["y"], mode="markers", name=f"no {colour}",
                marker=dict(size=marker_size - 1, color="rgba(180,180,180,0.5)"),
                customdata=rest["row"], hovertext=_hover(rest), hoverinfo="text"))
        part = frame[known]
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="markers", name=colour,
            marker=dict(size=marker_size, color=values[known], colorscale="Viridis", showscale=True,
                        colorbar=dict(title=LABELS.get(colour, colour), x=1.0, xanchor="left",
                                      len=0.9, y=0.45, yanchor="middle")),
            customdata=part["row"], hovertext=_hover(part), hoverinfo="text"))
    else:
        key = colour if colour in frame else "survey"
        groups = frame[key].fillna("unknown").astype(str)
        for name, colour_code in zip(sorted(groups.unique()), _cycle(_SURVEY_COLOURS)):
            part = frame[groups == name]
            fig.add_trace(go.Scattergl(
                x=part["x"], y=part["y"], mode="markers", name=f"{name} ({len(part)})",
                marker=dict(size=marker_size, color=colour_code, opacity=0.75),
                customdata=part["row"], hovertext=_hover(part), hoverinfo="text"))
    if highlight_row is not None and (frame["row"] == highlight_row).any():
        r = frame[frame["row"] == highlight_row].iloc[0]
        fig.add_trace(go.Scattergl(x=[r["x"]], y=[r["y"]], mode="markers", name="selected",
                                   marker=dict(size=16, color="rgba(0,0,0,0)",
                                               line=dict(color="black", width=2)),
                                   hoverinfo="skip"))
    if query_xy is not None:
        fig.add_trace(go.Scattergl(x=[query_xy[0]], y=[query_xy[1]], mode="markers",
                                   name="your spectrum",
                                   marker=dict(size=18, symbol="star", color="red",
                                               line=dict(color="black", width=1)),
                                   hoverinfo="skip"))
    continuous = colour in frame and colour in CONTINUOUS
    # A colour bar takes the right-hand side; the legend (no z, selected, your spectrum) then
    # goes above the map, so the two never overlap.
    legend = dict(itemsizing="constant", orientation="h", x=0.0, xanchor="left", y=1.0,
                  yanchor="bottom") if continuous else dict(itemsizing="constant")
    fig.update_layout(height=height, margin=dict(l=20, r=20, t=50 if continuous else 30, b=20),
                      xaxis=dict(showticklabels=False, title=f"{method} 1"),
                      yaxis=dict(showticklabels=False, title=f"{method} 2"),
                      legend=legend, dragmode="pan")
    return fig


def selected_row(event: Any) -> int | None:
    """The index row of the first point selected on the map (Streamlit's on_select event)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        points = getattr(getattr(event, "selection", None), "points", None)
    for point in points or []:  # the ring and the star carry no row: skip them
        data = point.get("customdata") if hasattr(point, "get") else None
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        value = as_float(data)
        if value is not None:
            return int(value)
    return None


