"""spectok explorer: the landing page (links to the four tools, and what is loaded).

The title and links are drawn before the library is imported, so the page is
usable at once; the model and index load below them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from icon import page_icon  # noqa: E402 - a drawn icon: nothing fetched from the internet

st.set_page_config(page_title="spectok · Home", page_icon=page_icon(), layout="wide")


def intro() -> None:
    st.title("spectok — one model for spectra from any survey")
    st.markdown(
        "A self-supervised *universal spectral tokenizer* reads a spectrum on its own "
        "instrument's wavelength grid — SDSS, BOSS, DESI, LAMOST, APOGEE, Gaia XP, stellar "
        "libraries — and places it in one shared embedding space, so similar objects are "
        "neighbours whatever telescope saw them."
    )
    st.page_link("pages/1_Search.py", label="**Search** — upload a spectrum, see its nearest "
                 "neighbours across surveys", icon=":material/search:")
    st.page_link("pages/2_Atlas.py", label="**Atlas** — the map of every indexed spectrum",
                 icon=":material/scatter_plot:")
    st.page_link("pages/3_Reconstruction.py", label="**Reconstruction** — the model's rendering, "
                 "residuals, and the view through another instrument", icon=":material/auto_fix_high:")
    st.page_link("pages/4_How_it_works.py", label="**How it works** — from pixels to neighbours, "
                 "step by step; credits and model card", icon=":material/school:")


def body() -> None:
    from spectok_core import explore

    st.markdown("**The instruments it reads** — each on its own pixels, from the Gaia XP "
                "prism's 343 wide pixels to APOGEE's 8,575 infrared ones:")
    st.plotly_chart(explore.coverage_figure(), key="coverage")
    st.divider()
    with st.spinner("Loading the model and the index…"):
        tok, index = common.resources()
    if tok is not None and index is not None:
        manifest = index.manifest
        contents = explore.index_contents_of(index)
        surveys = contents["survey"].astype(str).tolist()  # most spectra first
        st.success(
            f"Model **{tok.model_id}** loaded; index of **{len(index):,}** spectra from "
            f"{len(surveys)} surveys ({', '.join(surveys[:8])}{'…' if len(surveys) > 8 else ''})."
        )
        st.dataframe(contents, hide_index=True, key="contents", placeholder="")
        st.caption(f"Index built {manifest.get('created', '')} · metric "
                   f"{manifest.get('metric', '')} · model weights "
                   f"{str(manifest.get('weights_hash', ''))[:12]}")
    st.caption(f"{len(explore.examples())} bundled example spectra in assets/examples. "
               "Simulated spectra are labelled as such everywhere; see *How it works* for the "
               "data credits.")


intro()
import common  # noqa: E402 - after the links: it imports the library (a second or two)

common.guard(body, "Home")
