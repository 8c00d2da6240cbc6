"""Atlas: the map of every indexed spectrum, with the current query on it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from spectok_core import explore  # noqa: E402

SELECTED = "atlas_selected"


def _clicked() -> None:
    """on_select callback: remember the clicked point's row before the page reruns.

    The map is drawn again with a ring on the chosen point, which changes the figure
    and so gives the chart a new identity: Streamlit then reports an empty selection
    for it. The row is therefore kept in session state here, at the click, rather
    than read from the chart's return value (which is what lost it before).
    """
    row = explore.selected_row(st.session_state.get("atlas_map"))
    if row is not None:
        st.session_state[SELECTED] = row
        st.session_state["atlas_id"] = ""  # a click replaces a typed lookup


@st.cache_data(show_spinner="Counting the map's points…", max_entries=4)
def _density(_index, key: str) -> dict:
    """The density of every map point, once per index (``key``: its folder and size)."""
    return explore.map_density(_index.coords)


@st.cache_data(show_spinner="Reading the map's sample…", max_entries=4)
def _sample(_index, key: str, limit: int):
    """The fixed sample's points with their metadata, once per index (``key``: folder, size)."""
    return _points(_index, _index.sample_rows(limit))


def _points(index, rows):
    frame = explore.map_frame(index.rows_metadata(rows), np.asarray(index.coords[rows]))
    frame["row"] = rows
    return frame


def _map_frame(index, keep: int | None):
    """The points drawn: every indexed spectrum, or above the limit a fixed sample (plus the
    selection) over the density of all of them."""
    limit = explore.map_points_limit()
    if len(index) <= limit:
        return explore.map_frame(index.metadata, index.coords), None
    key = f"{index.path}:{len(index)}"
    frame = _sample(index, key, limit)
    if keep is not None and not (frame["row"] == keep).any():
        frame = pd.concat([frame, _points(index, np.array([keep]))], ignore_index=True)
    return frame, _density(index, key)


def body() -> None:
    st.title("Atlas: every indexed spectrum on one map")
    tok, index = common.resources()
    if index is None:
        return
    method = index.manifest.get("map", {}).get("method", "umap").upper()
    st.caption(f"{len(index):,} spectra, placed by {method} of their embeddings: nearby points "
               "are spectra the model finds alike, whichever survey observed them. Click a "
               "point to see it and its neighbours.")
    row = st.session_state.get(SELECTED)
    frame, density = _map_frame(index, row if row is not None and 0 <= int(row) < len(index) else None)
    if density is not None:
        st.caption(f"{len(index):,} spectra are too many to draw one by one: the grey shading is "
                   f"where all of them lie, and a fixed random sample of {len(frame):,} is drawn "
                   "as points you can click.")
    options = [c for c in explore.CATEGORICAL + explore.CONTINUOUS if c in frame]
    colour = st.selectbox("Colour by", options, key="atlas_colour",
                          format_func=lambda c: explore.LABELS.get(c, c))
    q = common.query()
    query_xy = None
    if q is not None and tok is not None:
        query_xy = index.place(common.query_vector(tok, index))
        st.caption(f"★ your spectrum: {explore.spectrum_label(q['spectrum'])}")
    else:
        st.caption("Choose a spectrum on the Search page to see where it falls (★).")
    typed = common.lookup_row(index, "atlas", label="…or find one: object id, or RA Dec "
                              "(degrees or sexagesimal)")
    if typed is not None:
        st.session_state[SELECTED] = typed
    row = st.session_state.get(SELECTED)
    if row is not None and not 0 <= int(row) < len(index):
        row = None  # from another index (the app was restarted on a different one)
    if row is not None and not (frame["row"] == int(row)).any():  # typed, outside the sample
        frame, density = _map_frame(index, int(row))
    st.plotly_chart(
        explore.map_figure(frame, colour, query_xy=query_xy, highlight_row=row, method=method,
                           density=density),
        key="atlas_map", on_select=_clicked, selection_mode="points",
    )
    if row is None:
        return
    row = int(row)
    spectrum = index.spectrum(row)
    st.subheader(f"Selected: {explore.spectrum_label(spectrum)}")
    st.plotly_chart(explore.spectrum_figure(spectrum, z=explore.frame_redshift(spectrum)),
                    key="atlas_spectrum")
    hits = explore.neighbours(index, index.embedding(row), k=8, exclude_row=row)
    st.markdown(f"**Its {len(hits)} nearest neighbours**")
    common.neighbours_dataframe(explore.hits_table(hits), key="atlas_hits")
    if st.button("Explore this spectrum on the Search page", key="atlas_to_search"):
        common.set_query(spectrum, "index", row=row)
        st.switch_page("pages/1_Search.py")


common.page("Atlas", body)
