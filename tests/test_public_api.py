"""The public API of DESIGN.md, end to end on the shipped model and demo index."""

import numpy as np

import spectok_core as sc
from tests.synthetic import sdss as sdss_layouts


def test_design_snippet_runs_on_shipped_model_and_index():
    name, data = sdss_layouts.LAYOUTS["spec_boss"]()
    spectra = sc.read_spectra(data, name=name)
    tok = sc.Tokenizer.from_pretrained()
    emb = tok.embed(spectra)
    assert emb.shape == (len(spectra), tok.config.d_embed)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    toks = tok.tokenize(spectra)
    assert toks[0].tokens.shape[0] == toks[0].wave_min.size == toks[0].valid.size
    rec = tok.reconstruct(spectra[0])
    assert np.array_equal(rec.wave, spectra[0].wave)
    idx = sc.SpectrumIndex.load()  # checks the index was built with these very weights
    hits = idx.search(emb[0], k=10)
    assert len(hits) == 10 and hits["similarity"].is_monotonic_decreasing
    real = idx.search(emb[0], k=5, where={"origin": "real"})
    assert (real["origin"] == "real").all()


def test_index_search_finds_an_indexed_spectrum_itself():
    idx = sc.SpectrumIndex.load()
    tok = sc.Tokenizer.from_pretrained()
    row = len(idx) // 2
    spectrum = idx.spectrum(row)
    hits = idx.search(tok.embed([spectrum])[0], k=3)
    # The display copy is float16: its embedding is near, not bit-identical to, the stored one.
    assert row in hits["row"].tolist()
