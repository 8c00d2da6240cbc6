"""Stage 2 (``spectok align``): only the summary head trains, on same-object pairs."""

import json
import shutil

import numpy as np
import pytest
import torch

from spectok_core import align
from spectok_core.cli import main
from spectok_core.data.pairs import PairIndex, read_locations
from spectok_core.model import PRESETS, Tokenizer
from tests.test_train import tiny_corpus

CFG = align.AlignConfig(hidden=64, steps=300, batch=32, lr=3e-3, calibration_spectra=40)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"), n=64, same_objects=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return Tokenizer.from_config("tiny", seed=3).save(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def aligned(corpus, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "align"
    return align.align(corpus, source, out, CFG, progress=False), out


def partner_rank(tok, corpus):
    """Median rank, among the training Gaia XP spectra, of each SDSS spectrum's own star (0 = first)."""
    index = PairIndex.build(corpus, "train", min_pairs=5)
    rows = index.pairs[("gaia_xp", "sdss")]
    gaia = tok.embed(read_locations(corpus, index.shards[rows[:, 0]], index.rows[rows[:, 0]]))
    sdss = tok.embed(read_locations(corpus, index.shards[rows[:, 1]], index.rows[rows[:, 1]]))
    similarity = sdss @ gaia.T
    own = np.diag(similarity)[:, None]
    return float(np.median((similarity > own).sum(axis=1)))


def test_only_the_head_changes_and_reconstruction_is_identical(aligned, source, corpus):
    tok, out = aligned
    before = Tokenizer.from_pretrained(source)
    assert tok.config.summary_hidden == CFG.hidden and before.config.summary_hidden == 0
    old, new = before.model.state_dict(), tok.model.state_dict()
    changed = {k for k in new if k not in old or not torch.equal(new[k], old[k])}
    assert changed and all(k.startswith(("summary_head.", "embed_")) for k in changed), changed
    spectrum = read_locations(corpus, np.array(["sdss/sdss-0.h5"]), np.array([0]))[0]
    np.testing.assert_array_equal(before.reconstruct(spectrum).flux, tok.reconstruct(spectrum).flux)
    saved = Tokenizer.from_pretrained(out / "final")  # the folder loads and embeds as trained
    np.testing.assert_allclose(saved.embed(spectrum), tok.embed(spectrum), atol=1e-6)
    meta = json.loads((out / "final" / "metadata.json").read_text())
    assert meta["aligned_from_weights"] == before.weights_hash and meta["align_config"]["hidden"] == 64


def test_alignment_brings_one_star_from_two_instruments_together(aligned, source, corpus):
    # 60 blackbody stars differing only in Teff, an untrained tiny encoder: its latents hold
    # little, yet the head alone halves how far down the list each star's partner lies.
    before = partner_rank(Tokenizer.from_pretrained(source), corpus)
    after = partner_rank(aligned[0], corpus)
    assert before > 20 and after < 0.6 * before, (before, after)
    log = np.loadtxt(aligned[1] / "align.csv", delimiter=",", skiprows=1)
    assert log[-1, 1] < log[0, 1]  # the InfoNCE fell


def test_a_rerun_reuses_the_cached_latents(aligned, source, corpus, monkeypatch):
    def recompute(*args, **kwargs):
        raise AssertionError("latents were recomputed")

    monkeypatch.setattr(align, "pair_latents", recompute)
    tok = align.align(corpus, source, aligned[1], align.AlignConfig(hidden=0, steps=20, batch=16,
                                                                   calibration_spectra=40), progress=False)
    assert tok.config.summary_hidden == 0


def test_cli_align_and_its_refusals(corpus, source, tmp_path, capsys):
    assert main(["align", "--corpus", str(corpus), "--model", str(source), "--out", str(tmp_path / "run"),
                 "--hidden", "16", "--steps", "50", "--batch", "16", "--threads", "1"]) == 0
    assert "aligned model written" in capsys.readouterr().out
    assert Tokenizer.from_pretrained(tmp_path / "run" / "final").config.summary_hidden == 16
    # A model without latents has no head to align.
    tokens_only = Tokenizer.from_config(PRESETS["tiny"].__class__(**{**PRESETS["tiny"].__dict__, "n_latents": 0}))
    folder = tokens_only.save(tmp_path / "tokens")
    assert main(["align", "--corpus", str(corpus), "--model", str(folder), "--out", str(tmp_path / "r2")]) == 1
    assert "n_latents = 0" in capsys.readouterr().err
    # A corpus without same-object pairs: said so.
    distinct = tiny_corpus(tmp_path / "distinct", n=12)
    assert main(["align", "--corpus", str(distinct), "--model", str(source), "--out", str(tmp_path / "r3")]) == 1
    assert "same-object pairs" in capsys.readouterr().err
    assert main(["align", "--corpus", str(corpus), "--model", str(source), "--out", str(tmp_path / "r4"),
                 "--steps", "0"]) == 1
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert main(["align", "--corpus", str(corpus), "--model", str(source), "--out", str(tmp_path / "r5"),
                 "--weight-decay", "-1"]) == 1
    assert "--weight-decay must be 0 or more" in capsys.readouterr().err


def test_pair_weighting_decides_how_often_each_instrument_pair_trains():
    rows = lambda n: np.stack([np.arange(n), np.arange(n)], axis=1)  # noqa: E731
    data = align.PairLatents(np.zeros((400, 4), np.float32),
                             {("boss", "sdss"): rows(400), ("apogee", "gaia_xp"): rows(4),
                              ("desi", "sdss"): rows(1)}, "x")
    keys, weights = align.pair_draw_weights(data, CFG)  # default: ∝ √pairs
    assert keys == [("apogee", "gaia_xp"), ("boss", "sdss")]  # one pair cannot make a step
    assert weights == pytest.approx([2 / 22, 20 / 22])
    _, weights = align.pair_draw_weights(data, align.AlignConfig(pair_weighting="uniform"))
    assert weights == pytest.approx([0.5, 0.5])
    with pytest.raises(align.SpectrumError, match="'sqrt' or 'uniform'"):
        align.pair_draw_weights(data, align.AlignConfig(pair_weighting="square"))


def test_weight_decay_changes_the_head_and_it_still_aligns(corpus, source, aligned, tmp_path):
    cfg = align.AlignConfig(**{**CFG.__dict__, "weight_decay": 0.01})
    shutil.copy(aligned[1] / "latents-train.npz", tmp_path / "latents-train.npz")  # same latents
    tok = align.align(corpus, source, tmp_path, cfg, progress=False)
    plain = aligned[0].model.summary_head.state_dict()
    decayed = tok.model.summary_head.state_dict()
    assert sum(float(v.norm()) for v in decayed.values()) < sum(float(v.norm()) for v in plain.values())
    before = partner_rank(Tokenizer.from_pretrained(source), corpus)
    assert partner_rank(tok, corpus) < 0.6 * before
    meta = json.loads((tmp_path / "final" / "metadata.json").read_text())
    assert meta["align_config"]["weight_decay"] == 0.01
    with pytest.raises(align.SpectrumError, match="weight decay"):
        align.train_head(tok.model.summary_head, align.PairLatents.load(tmp_path / "latents-train.npz"),
                         align.AlignConfig(weight_decay=-0.1))


@pytest.mark.parametrize("bad, message", [({"weight_decay": -0.1}, "weight decay"),
                                          ({"pair_weighting": "square"}, "'sqrt' or 'uniform'"),
                                          ({"temperature": 0.0}, "temperature"),
                                          ({"steps": 0}, "at least 1")])
def test_bad_settings_are_refused_before_any_latents(corpus, source, tmp_path, bad, message):
    with pytest.raises(align.SpectrumError, match=message):
        align.align(corpus, source, tmp_path / "run", align.AlignConfig(**bad), progress=False)
    assert not (tmp_path / "run").exists()  # nothing computed, nothing written
