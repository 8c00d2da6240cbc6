"""Reconstruction: the model's rendering of the spectrum, and of it through another instrument."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from spectok_core import SpectrumError, explore, surveys  # noqa: E402


def reconstruction(tok, spectrum) -> None:
    st.subheader("Input and reconstruction")
    st.caption("The encoder reads the spectrum's patches; the decoder draws it again on the same "
               "pixels from the tokens alone. Residuals are (data − model) / σ of the data.")
    model = tok.reconstruct(spectrum)
    residuals = explore.residuals_sigma(spectrum, model)
    summary = explore.residual_summary(residuals)
    a, b, c = st.columns(3)
    a.metric("χ² per usable pixel", f"{summary['chi2_per_pixel']:.2f}")
    b.metric("median |residual|", f"{summary['median_abs']:.2f} σ")
    c.metric("pixels beyond 3σ", f"{summary['beyond_3sigma']:.1%}")
    if spectrum.meta.get("ivar_nominal"):
        st.caption("This is an indexed display copy: its σ is the median S/N spread evenly, so the "
                   "residuals in σ are approximate.")
    st.plotly_chart(explore.reconstruction_figure(spectrum, model, residuals), key="rec_plot")


def other_instrument(tok, spectrum) -> None:
    st.subheader("The same object through another instrument")
    keys = explore.rendering_instruments()
    default = keys.index("gaia_xp") if "gaia_xp" in keys and spectrum.survey != "gaia_xp" else 0
    key = st.selectbox("Render on the native grid of", keys, index=default, key="rec_target",
                       format_func=lambda k: f"{surveys.get(k).name} ({k})")
    st.caption("The decoder is asked for flux on that instrument's own pixels and resolution — "
               "only where the two wavelength ranges overlap: the model cannot draw what it "
               "never read.")
    try:
        rendered = explore.render_on(tok, spectrum, key)
    except SpectrumError as err:
        st.info(f"No overlap: {err}.")
        return
    lo, hi = rendered.wave_range
    st.caption(f"{len(rendered):,} {key} pixels over {lo:,.0f}–{hi:,.0f} Å "
               f"({rendered.meta['coverage']:.0%} of that instrument's range).")
    st.plotly_chart(explore.rendering_figure(spectrum, rendered, key), key="render_plot")
    st.download_button(f"Download the {key} rendering (CSV)",
                       explore.write_csv(rendered, title=f"spectok rendering of "
                                         f"{explore.spectrum_label(spectrum)} on the {key} grid"),
                       file_name=f"spectok_rendering_{key}.csv", mime="text/csv",
                       key="render_download")


def body() -> None:
    st.title("Reconstruction: what the model keeps")
    tok, index = common.resources()
    with st.expander("Choose a spectrum", expanded=common.query() is None):
        ok = common.pick_query(index, key="rec")
    if not ok:
        return
    if common.query() is None:
        st.info("No spectrum chosen yet: pick one above, or on the Search page.")
        return
    if tok is None:
        return
    spectrum = common.query()["spectrum"]
    st.markdown(f"**{explore.spectrum_label(spectrum)}**")
    common.describe_query()
    reconstruction(tok, spectrum)
    other_instrument(tok, spectrum)


common.page("Reconstruction", body)
