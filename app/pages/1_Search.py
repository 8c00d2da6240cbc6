"""Search: one spectrum in, its nearest neighbours across surveys out."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from spectok_core import explore  # noqa: E402


def filters(index) -> tuple[dict | None, int]:
    with st.sidebar:
        st.header("Neighbour filters")
        k = st.slider("How many neighbours (k)", 1, 50, 10, key="k")
        surveys = st.multiselect("Surveys", explore.index_values(index, "survey"),
                                 key="f_surveys", placeholder="all surveys")
        classes = st.multiselect("Classes", explore.index_values(index, "class"), key="f_classes",
                                 placeholder="all classes")
        origin = st.radio("Origin", ["any", "real", "simulated"], horizontal=True, key="f_origin")
    return explore.where_filter(surveys, classes, origin), k


def plot_controls(spectrum, estimates) -> dict:
    """Line markers at a redshift the user can move, rest frame, smoothing, noise."""
    z_file = explore.as_float(spectrum.meta.get("z"))
    z_est = estimates.get("z") if estimates.get("z") and estimates["z"].reliable else None
    class_est = estimates.get("class") if estimates.get("class") and estimates["class"].reliable \
        else None
    cls = spectrum.meta.get("class") or (class_est.value if class_est is not None else None)
    is_star = str(cls or "").upper() == "STAR"
    if z_file is not None:
        z_default, z_from = z_file, "the file"
    elif z_est is not None and not is_star:
        z_default, z_from = z_est.value, "the neighbours' median"
    elif is_star:
        z_default, z_from = 0.0, "a star: at rest"
    else:
        z_default, z_from = None, ""
    q = common.query()
    cols = st.columns([1.1, 1, 1.4, 1, 1.3], vertical_alignment="bottom")
    # A galaxy or quasar of unknown redshift gets no markers until the user sets z: lines at
    # z = 0 on an observed spectrum would point at features that are not there.
    show_lines = cols[0].checkbox("Mark lines", value=z_default is not None,
                                  key=f"show_lines|{q['key']}")
    z = z_default
    if show_lines:
        low, high = explore.redshift_slider_range(z_default, cls)
        start = min(max(float(z_default or 0.0), low), high)
        z = cols[2].slider("z of the line markers", low, high, start,
                           step=0.0005, format="%.4f", key=f"z_lines|{q['key']}",
                           help="move the markers to another redshift; "
                                + (f"starts at z from {z_from}" if z_from else
                                   "the file gives no redshift and the neighbours none reliable"))
    rest = cols[1].toggle("Rest frame", value=False, key="rest", disabled=z is None,
                          help="divide wavelengths by 1 + z (z from the slider); the "
                               "neighbour plots below follow")
    smoothing = cols[3].selectbox("Smooth", [0, 3, 5, 9, 15, 25], key="smooth",
                                  format_func=lambda n: "off" if n == 0 else f"{n} px",
                                  help="inverse-variance-weighted boxcar, for the eye only: the "
                                       "search always reads the raw pixels")
    show_noise = cols[4].checkbox("Show noise (1σ)", value=False, key="show_noise")
    if z_default is None and not show_lines:
        st.caption("No redshift known (none in the file, no reliable neighbour estimate): line "
                   "markers are off. Tick *Mark lines* and set z to place them.")
    return {"z": z, "rest": bool(rest and z is not None), "show_lines": show_lines,
            "smoothing": int(smoothing), "show_noise": show_noise, "object_class": cls}


def show_spectrum(spectrum, view: dict) -> None:
    fig = explore.spectrum_figure(spectrum, z=view["z"], rest=view["rest"],
                                  show_lines=view["show_lines"], object_class=view["object_class"],
                                  smoothing=view["smoothing"], show_noise=view["show_noise"])
    st.plotly_chart(fig, key="query_plot")


def show_neighbours(index, hits, spectrum, estimates, view: dict) -> None:
    st.subheader(f"Nearest {len(hits)} neighbours across surveys")
    if len(hits) == 0:
        st.info("No indexed spectrum matches these filters; loosen them in the sidebar.")
        return
    st.markdown("**Neighbour estimates** — medians and spreads *among the neighbours*, "
                "not a fit to your spectrum. An estimate is shown only when at least "
                f"{explore.MIN_AGREEING} neighbours with similarity ≥ {explore.MIN_SIMILARITY:g} "
                "agree on it, and withheld where the file's own pipeline value disagrees:")
    for warning in explore.estimate_warnings(spectrum, hits, explore.index_values(index, "survey")):
        st.warning(warning)
    st.table(explore.estimates_table(estimates).set_index("quantity"))
    best = hits.iloc[0]
    st.caption(f"Closest: {best['survey']} {best['object_id']} "
               f"(similarity {float(best['similarity']):.4f})")
    common.neighbours_dataframe(explore.hits_table(hits), key="neighbours_table")
    st.download_button("Download neighbours (CSV)", explore.neighbours_csv(hits),
                       file_name="spectok_neighbours.csv", mime="text/csv", key="download")
    st.caption("The CSV starts with ra, dec (ICRS degrees; empty for simulated spectra) and "
               "similarity, then the labels and archive links.")
    shown = hits.head(6)
    spectra = [index.spectrum(int(r)) for r in shown["row"]]
    labels = [explore.neighbour_label(r) for r in shown.to_dict("records")]
    choice = st.segmented_control("Neighbour spectra", ["Stacked", "Overlaid"],
                                  default="Stacked", key="view")
    query_z = view["z"] if view["rest"] else None
    if choice == "Overlaid":
        st.plotly_chart(explore.overlay_figure(spectrum, spectra[:5], labels[:5], rest=view["rest"],
                                               query_z=query_z), key="overlay")
    else:
        st.plotly_chart(explore.neighbours_figure(spectrum, spectra, labels, rest=view["rest"],
                                                  query_z=query_z), key="stacked")
    if view["rest"]:
        st.caption("Rest frame: each spectrum divided by its own 1 + z (yours by the slider's); "
                   "one without a redshift stays observed and says so.")


def show_what_it_reads() -> None:
    """Before a query: the instruments the model reads, and the file formats.

    Drawn on the empty page so that a user can check their spectrum's range first. It also
    has the browser load and compile the chart and table code (about 1 s of CPU on a
    background thread) before the upload rather than while the user waits for neighbours.
    """
    st.markdown("**What the model reads** — each instrument on its own pixels; a spectrum from "
                "another instrument works where its range overlaps these:")
    st.plotly_chart(explore.coverage_figure(), key="search_coverage")
    with st.expander("Which formats work?"):
        st.dataframe(explore.formats_table(), hide_index=True, key="search_formats")


def body() -> None:
    st.title("Search: what looks like this spectrum?")
    tok, index = common.resources()
    if not common.pick_query(index, key="search"):
        return
    q = common.query()
    if q is None:
        st.info("Upload a spectrum, pick a bundled example, or choose an indexed spectrum to "
                "see its nearest neighbours across surveys.")
        show_what_it_reads()
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
    # The file's own class, z or labels, where it has them, stand beside (and can veto) the
    # neighbours' estimates.
    estimates = explore.against_file(explore.gated_estimates(hits, spectrum), spectrum)
    view = plot_controls(spectrum, estimates)
    show_spectrum(spectrum, view)
    show_neighbours(index, hits, spectrum, estimates, view)


common.page("Search", body)
