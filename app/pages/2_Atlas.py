"""Atlas: the map of every indexed spectrum, with the current query on it."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from spectok_core import explore  # noqa: E402


def selected_from_id(frame) -> int | None:
    wanted = st.text_input("…or type an object id", key="atlas_id")
    if not wanted:
        return None
    rows = frame.loc[frame["object_id"].astype(str) == wanted.strip(), "row"].tolist()
    if not rows:
        st.warning(f"No indexed spectrum has object id {wanted!r}.")
        return None
    if len(rows) > 1:
        return st.selectbox("Observed by", rows, key="atlas_id_row",
                            format_func=lambda r: f"{frame['survey'].iloc[r]} (row {r})")
    return int(rows[0])


def body() -> None:
    st.title("Atlas: every indexed spectrum on one map")
    tok, index = common.resources()
    if index is None:
        return
    method = index.manifest.get("map", {}).get("method", "umap").upper()
    st.caption(f"{len(index):,} spectra, placed by {method} of their embeddings: nearby points "
               "are spectra the model finds alike, whichever survey observed them. Click a "
               "point to see it and its neighbours.")
    frame = explore.map_frame(index.metadata, index.coords)
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
    # The map's selection from the last click is known before the map is drawn again,
    # so the chosen point is ringed at once.
    clicked = explore.selected_row(st.session_state.get("atlas_map"))
    highlight = clicked if clicked is not None else st.session_state.get("atlas_selected")
    event = st.plotly_chart(
        explore.map_figure(frame, colour, query_xy=query_xy, highlight_row=highlight, method=method),
        key="atlas_map", on_select="rerun", selection_mode="points",
    )
    row = explore.selected_row(event)
    typed = selected_from_id(frame)
    row = typed if typed is not None else row
    if row is None:
        return
    st.session_state["atlas_selected"] = row
    spectrum = index.spectrum(row)
    st.subheader(f"Selected: {explore.spectrum_label(spectrum)}")
    st.plotly_chart(explore.spectrum_figure(spectrum, z=explore.as_float(spectrum.meta.get("z"))),
                    key="atlas_spectrum")
    hits = explore.neighbours(index, index.embedding(row), k=8, exclude_row=row)
    st.dataframe(explore.hits_table(hits), hide_index=True, key="atlas_hits")
    if st.button("Explore this spectrum on the Search page", key="atlas_to_search"):
        common.set_query(spectrum, "index", row=row)
        st.switch_page("pages/1_Search.py")


common.page("Atlas", body, icon=":material/scatter_plot:")
