"""How it works: follow one spectrum from native pixels to its neighbours; credits; model card."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402

from spectok_core import explore  # noqa: E402


def the_spectrum(tok, index):
    with st.expander("Choose the spectrum to follow", expanded=False):
        ok = common.pick_query(index, key="how")
    if not ok:
        return None
    if common.query() is None:
        examples = explore.examples()
        if not examples:
            st.info("Choose a spectrum above to follow it through the model.")
            return None
        # A shipped example is the project's own file: read in-process, without the upload
        # worker's start-up second.
        spectrum = explore.read_upload(examples[0].read_bytes(), examples[0].name,
                                       isolated=False)[0]
        common.set_query(spectrum, f"example:{examples[0].name}")
    return common.query()["spectrum"]


def walkthrough(tok, index, spectrum) -> None:
    config = tok.config
    lo, hi = spectrum.wave_range
    st.header("1 · Native pixels")
    st.markdown(
        f"This spectrum has **{len(spectrum):,} pixels** from {lo:,.0f} to {hi:,.0f} Å, exactly as "
        f"the **{spectrum.survey}** instrument recorded them. Other surveys use other grids — a "
        "Gaia XP spectrum has 343 wide pixels, an APOGEE one 8,575 narrow ones in the infrared. "
        "spectok **never resamples** onto a common grid: it reads each spectrum as it is. Red "
        "bands mark bad pixels (cosmic rays, sky lines, detector gaps) that the model ignores."
    )
    st.plotly_chart(explore.spectrum_figure(spectrum, show_lines=False), key="how_pixels")

    st.header("2 · Patches")
    figure, item = explore.patches_figure(spectrum, config)
    n_valid = int(item.valid.sum())
    st.markdown(
        f"The flux is divided by its median (so bright and faint objects look alike) and cut into "
        f"**patches of {config.patch_size} pixels** — {item.valid.size} here. Each patch becomes "
        f"one *token*, like a word in a sentence. {item.valid.size - n_valid} patches have too many "
        "bad pixels and are left out entirely (shaded red): the model never sees them as zeros."
    )
    st.plotly_chart(figure, key="how_patches")
    patch = st.slider("Look inside one patch", 0, item.valid.size - 1, item.valid.size // 2,
                      key="how_patch")
    st.caption("What the model reads for each pixel: its normalised flux, its noise (log σ), and "
               "whether it is usable.")
    st.plotly_chart(explore.patch_pixels_figure(item, patch), key="how_patch_pixels")

    st.header("3 · Wavelength encoding")
    st.markdown(
        f"How does the model know *where* a patch lies? Each pixel's physical wavelength is "
        f"turned into {2 * config.n_freq} numbers: sines and cosines with periods from "
        f"{config.period_min:g} Å to {config.period_max:,.0f} Å. Long periods say roughly where "
        "(blue or red), short ones say precisely where. Because the code depends only on the "
        "wavelength in Å, Hα at 6565 Å gets the same code whichever instrument observed it — "
        "that is what lets one model read every survey. (Periods shorter than the pixel spacing "
        "look like noise in this picture; averaged over a patch, as the model does, they fade.)"
    )
    st.plotly_chart(explore.encoding_figure(spectrum, config), key="how_encoding")

    st.header("4 · Tokens")
    tokens = tok.tokenize([spectrum])[0]
    st.markdown(
        f"A transformer encoder lets the patches look at each other, and returns one vector of "
        f"**{tokens.tokens.shape[1]} numbers per patch**: the tokens. Each column below is one "
        "token, placed at its patch's wavelength. "
        + (f"Then {config.n_latents} learned *latent queries* read all the tokens (cross-attention) "
           f"and summarise them into {config.n_latents} latent vectors: the model's description of "
           "the object. The decoder redraws the spectrum — on any grid — from these latents alone, "
           "never from the tokens, so whatever it needs about the object has to pass through them "
           "(see the Reconstruction page). Brightness stays out: the flux is divided by its median "
           "first, and that scale is kept aside."
           if config.n_latents else
           "The decoder can redraw the whole spectrum — on any grid — from these tokens alone "
           "(see the Reconstruction page).")
    )
    st.plotly_chart(explore.tokens_figure(tokens), key="how_tokens")

    st.header("5 · Embedding")
    vector = common.query_vector(tok, index)
    st.markdown(
        (f"A {'small neural network' if config.summary_hidden else 'linear map'} (the summary head) "
         f"turns the latents into **one vector of {vector.size} numbers**"
         if config.n_latents else f"The tokens are averaged into **one vector of {vector.size} numbers**")
        + ", which a fixed map (fitted on training spectra) centres and turns onto the "
        "directions in which spectra differ most, and which is scaled to length 1: the "
        "embedding. Two spectra are similar when their embeddings point the same way; their "
        "similarity is the dot product (1 = identical, 0 = unrelated)."
        + (" In training the model also sees one object through two instruments (simulated "
           "observations of one source) and a part of a spectrum beside the whole: it is asked to "
           "redraw each from the other and to give both the same embedding, so that one object "
           "lands in one place whatever instrument observed it." if config.n_latents else "")
        + (" Then, with everything else frozen, the summary head alone was trained once more on "
           "tens of thousands of such pairs, hundreds at a time — infrared APOGEE beside optical "
           "SDSS, DESI, LAMOST and Gaia XP among them: each object's two embeddings must "
           "be closer to each other than to any other object's. This changes only where spectra "
           "land in the search space, not how the model redraws them." if config.summary_hidden else "")
    )
    st.plotly_chart(explore.embedding_figure(vector), key="how_embedding")

    st.header("6 · Neighbours")
    if index is None:
        st.info("No index loaded, so no neighbours to show.")
        return
    hits = explore.neighbours(index, vector, k=5, exclude_row=common.query()["row"])
    st.markdown(
        f"Search compares the embedding with the {len(index):,} precomputed embeddings of the "
        "index and returns the closest — from any survey. Their labels give *neighbour "
        "estimates* of what this object is:"
    )
    common.neighbours_dataframe(explore.hits_table(hits), key="how_hits")
    st.dataframe(explore.estimates_table(explore.gated_estimates(hits)), hide_index=True,
                 key="how_estimates", placeholder="")


def credits_and_card() -> None:
    st.header("Data credits")
    credits = explore.credits()
    st.markdown("**Surveys and libraries** — the instruments the model knows:")
    st.markdown("\n".join(f"- **{name}**: {text}" for name, text in credits["surveys"]))
    st.markdown("**Real spectra**, from data files shipped in these PyPI packages "
                "(fetched as pinned wheels, never imported):")
    st.markdown("\n".join(f"- `{name}`: {text}" for name, text in credits["packages"]))
    st.caption("Spectra labelled *simulated* were made by spectok: real stellar spectra, galaxy "
               "templates and quasar models observed through each instrument's grid, resolution, "
               "noise and masks.")
    st.header("Model card")
    card = explore.model_card()
    if not card:
        st.info("This model folder has no MODEL_CARD.md.")
        return
    shown, developer = explore.model_card_parts(card)
    st.markdown(shown)
    if developer:
        with st.expander("For developers: architecture, training and ablation tables"):
            st.markdown(developer)


def body() -> None:
    st.title("How it works: from pixels to neighbours")
    walk = st.container()
    # The credits and the model card need no model: drawn first (below the walkthrough's
    # place), so the page reads at once while the model loads on a cold server.
    credits_and_card()
    with walk:
        tok, index = common.resources()
        if tok is not None:
            spectrum = the_spectrum(tok, index)
            if spectrum is not None:
                st.caption(f"Following **{explore.spectrum_label(spectrum)}**")
                walkthrough(tok, index, spectrum)


common.page("How it works", body)
