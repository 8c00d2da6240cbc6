"""Search: one spectrum in, its nearest neighbours across surveys out."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from spectok_core import explore  # noqa: E402


def filters(index) -> tuple[dict | None, int]:
    meta = index.metadata
    with st.sidebar:
        st.header("Neighbour filters")
        k = st.slider("How many neighbours (k)", 1, 50, 10, key="k")
        surveys = st.multiselect("Surveys", sorted(meta["survey"].dropna().astype(str).unique()),
                                 key="f_surveys", placeholder="all surveys")
        classes = st.multiselect("Classes", sorted(meta["class"].dropna().astype(str).unique())
                                 if "class" in meta else [], key="f_classes",
                                 placeholder="all classes")
        origin = st.radio("Origin", ["any", "real", "simulated"], horizontal=True, key="f_origin")
    return explore.where_filter(surveys, classes, origin), k


def show_spectrum(spectrum, estimates) -> None:
    z_file = explore.as_float(spectrum.meta.get("z"))
    z_est = estimates.get("z") if estimates.get("z") and estimates["z"].reliable else None
    class_est = estimates.get("class") if estimates.get("class") and estimates["class"].reliable \
        else None
    cols = st.columns([1, 1, 2])
    show_lines = cols[0].checkbox("Mark lines", value=True, key="show_lines")
    z, rest = z_file, False
    if z_file is not None:
        rest = cols[1].toggle("Rest frame", value=False, key="rest",
                              help=f"divide wavelengths by 1 + z (z = {z_file:.4f}, from the file)")
    elif z_est is not None and class_est is not None and class_est.value != "STAR":
        use = cols[1].toggle("Use neighbour z", value=False, key="use_est_z",
                             help=f"the file gives no redshift; the neighbours' median is "
                                  f"{z_est.value:.4f}")
        if use:
            z = z_est.value
            rest = cols[2].toggle("Rest frame", value=False, key="rest_est")
    cls = spectrum.meta.get("class") or (class_est.value if class_est is not None else None)
    fig = explore.spectrum_figure(spectrum, z=z, rest=rest, show_lines=show_lines, object_class=cls)
    st.plotly_chart(fig, key="query_plot")


def show_neighbours(index, hits, spectrum, estimates) -> None:
    st.subheader(f"Nearest {len(hits)} neighbours across surveys")
    if len(hits) == 0:
        st.info("No indexed spectrum matches these filters; loosen them in the sidebar.")
        return
    st.markdown("**Neighbour estimates** — medians and spreads *among the neighbours*, "
                "not a fit to your spectrum. An estimate is shown only when at least "
                f"{explore.MIN_AGREEING} neighbours with similarity ≥ {explore.MIN_SIMILARITY:g} "
                "agree on it:")
    for warning in explore.estimate_warnings(spectrum, hits, index.metadata["survey"].unique()):
        st.warning(warning)
    st.table(explore.estimates_table(estimates).set_index("quantity"))
    best = hits.iloc[0]
    st.caption(f"Closest: {best['survey']} {best['object_id']} "
               f"(similarity {float(best['similarity']):.4f})")
    table = explore.hits_table(hits)
    st.dataframe(table, hide_index=True, key="neighbours_table")
    st.download_button("Download neighbours (CSV)", explore.neighbours_csv(hits),
                       file_name="spectok_neighbours.csv", mime="text/csv", key="download")
    shown = hits.head(6)
    spectra = [index.spectrum(int(r)) for r in shown["row"]]
    labels = [f"#{r.rank} {r.survey} · {r.similarity:.3f}" for r in shown.itertuples()]
    view = st.segmented_control("Neighbour spectra", ["Stacked", "Overlaid"],
                                default="Stacked", key="view")
    if view == "Overlaid":
        st.plotly_chart(explore.overlay_figure(spectrum, spectra[:5], labels[:5]), key="overlay")
    else:
        st.plotly_chart(explore.neighbours_figure(spectrum, spectra, labels), key="stacked")


def body() -> None:
    st.title("Search: what looks like this spectrum?")
    tok, index = common.resources()
    if not common.pick_query(index, key="search"):
        return
    q = common.query()
    if q is None:
        st.info("Upload a spectrum, pick a bundled example, or choose an indexed spectrum to "
                "see its nearest neighbours across surveys.")
        return
    spectrum = q["spectrum"]
    if tok is None or index is None:
        common.describe_query()
        st.plotly_chart(explore.spectrum_figure(spectrum), key="query_plot_only")
        return
    where, k = filters(index)
    vector = common.query_vector(tok, index)  # first: embedding notes the model's warnings
    common.describe_query()
    hits = explore.neighbours(index, vector, k=k, where=where, exclude_row=q["row"])
    estimates = explore.gated_estimates(hits, spectrum)
    show_spectrum(spectrum, estimates)
    show_neighbours(index, hits, spectrum, estimates)


common.page("Search", body, icon=":material/search:")
