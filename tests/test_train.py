"""Training: a tiny model on a tiny corpus; checkpoints, resume, determinism."""

import json

import numpy as np
import pytest
import torch

from spectok_core import Spectrum, SpectrumError, surveys
from spectok_core.data.corpus import metadata
from spectok_core.data.pairs import PairIndex, read_rows
from spectok_core.io.mmu import write_mmu_shard
from spectok_core.model import PRESETS, ModelConfig, Tokenizer
from spectok_core.train import TrainConfig, lr_at, open_corpus, train


def tiny_corpus(folder, n=24, same_objects=False):
    """Blackbody stars seen by SDSS and Gaia XP; with ``same_objects`` star i of both is one object."""
    for key, n_pix in (("sdss", 600), ("gaia_xp", None)):
        rng = np.random.default_rng(0)
        teffs = rng.uniform(3500, 9000, n)
        wave = surveys.get(key).native_grid()[:n_pix]
        spectra = []
        for i, teff in enumerate(teffs):
            flux = 1.0 / (wave / 5000.0) ** 5 / np.expm1(1.4388e8 / (wave * teff))
            flux /= np.median(flux)
            ivar = np.full(wave.size, 400.0)
            flux = flux + rng.standard_normal(wave.size) / 20.0
            split = "train" if i < n - 4 else "val"
            object_id = f"star-{i}" if same_objects else f"{key}-{i}"
            spectra.append(Spectrum(wave, flux, ivar, survey=key,
                                    meta={"object_id": object_id, "split": split}))
        write_mmu_shard(folder / key / f"{key}-0.h5", spectra)
    return folder


def test_open_corpus_selects_split(tmp_path):
    tiny_corpus(tmp_path)
    shards = open_corpus(tmp_path, "train")
    assert sorted(s.survey for s in shards) == ["gaia_xp", "sdss"]
    assert all(s.rows.size == 20 for s in shards)
    spectra = shards[0].read(shards[0].rows[:3])
    assert len(spectra) == 3 and spectra[0].survey == shards[0].survey


def test_lr_schedule_warms_up_and_decays():
    cfg = TrainConfig(steps=1000, warmup=100, lr=1e-3)
    assert lr_at(0, cfg) < lr_at(99, cfg) == 1e-3
    assert lr_at(999, cfg) < 0.1 * 1e-3


@pytest.mark.parametrize("pair_every", [0, 2])
def test_train_resume_matches_uninterrupted(tmp_path, pair_every):
    corpus = tiny_corpus(tmp_path / "corpus", same_objects=pair_every > 0)
    cfg = TrainConfig(steps=12, batch_size=4, warmup=2, checkpoint_every=6, log_every=1, seed=3,
                      pair_every=pair_every, pair_batch=4, pair_min=5,
                      view_render=0.5 * (pair_every > 0), view_contrastive=0.5 * (pair_every > 0))
    straight = train(corpus, tmp_path / "a", PRESETS["tiny"], cfg, progress=False)
    # Interrupted at step 8 (last checkpoint at 6), then resumed to 12.
    def interrupt(step, running):
        if step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(corpus, tmp_path / "b", PRESETS["tiny"], cfg, progress=False, on_step=interrupt)
    assert json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["step"] == 6
    resumed = train(corpus, tmp_path / "b", PRESETS["tiny"], cfg, progress=False)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert np.allclose(a.numpy(), b.numpy(), atol=1e-5), name
    log = (tmp_path / "a" / "loss.csv").read_text().splitlines()
    assert log[0] == "step,survey,chi2,lr,seconds"
    assert {int(line.split(",")[0]) for line in log[1:]} == set(range(1, 13))
    final = Tokenizer.from_pretrained(tmp_path / "a" / "final")
    assert final.embed(open_corpus(corpus, "val")[0].read(np.arange(2))).shape == (2, 16)
    surveys_logged = {line.split(",")[1] for line in log[1:]}
    assert ("pairs: InfoNCE" in surveys_logged) == (pair_every > 0)
    assert ("pairs: cross χ²" in surveys_logged) == (pair_every > 0)
    assert ("crop: InfoNCE" in surveys_logged) == ("crop: render χ²" in surveys_logged) == (pair_every > 0)


def test_pair_index_finds_same_object_pairs(tmp_path):
    corpus = tiny_corpus(tmp_path, same_objects=True)
    pairs = PairIndex.build(corpus, "train", min_pairs=5)
    assert list(pairs.pairs) == [("gaia_xp", "sdss")]
    table = pairs.pairs[("gaia_xp", "sdss")]
    assert len(table) == 20  # the 4 validation stars are left out
    ids = metadata(corpus).query("split == 'train'").reset_index(drop=True)
    assert (ids["object_id"].to_numpy()[table[:, 0]] == ids["object_id"].to_numpy()[table[:, 1]]).all()
    a, b, side_a, side_b = pairs.sample(np.random.default_rng(0), lambda a, b: 6)
    assert (a, b) == ("gaia_xp", "sdss") and len(side_a) == len(side_b) == 6
    assert {s.survey for s in side_a} == {"gaia_xp"} and {s.survey for s in side_b} == {"sdss"}
    # Index-aligned: a pair is one star (same temperature), so its two spectra share their slope.
    def slope(s):
        blue = s.flux[(s.wave > 3850) & (s.wave < 4000)].mean()
        red = s.flux[(s.wave > 4150) & (s.wave < 4300)].mean()
        return blue / red
    slopes_a, slopes_b = np.array([slope(s) for s in side_a]), np.array([slope(s) for s in side_b])
    assert np.corrcoef(slopes_a, slopes_b)[0, 1] > 0.95
    # Pairs need at least min_pairs to count; distinct objects give none.
    assert PairIndex.build(corpus, "train", min_pairs=21).pairs == {}
    assert PairIndex.build(tiny_corpus(tmp_path / "distinct"), "train", min_pairs=1).pairs == {}


def test_read_rows_keeps_order_and_repeats(tmp_path):
    corpus = tiny_corpus(tmp_path)
    path = next(corpus.rglob("sdss-0.h5"))
    rows = np.array([5, 2, 5, 0])
    spectra = read_rows(path, rows)
    single = [read_rows(path, np.array([r]))[0] for r in rows]
    assert all(np.array_equal(a.flux, b.flux) for a, b in zip(spectra, single))
    assert np.array_equal(spectra[0].flux, spectra[2].flux)
    assert not np.array_equal(spectra[0].flux, spectra[1].flux)


def test_pair_training_without_pairs_says_so(tmp_path):
    corpus = tiny_corpus(tmp_path / "corpus")
    with pytest.raises(SpectrumError, match="same-object pairs"):
        train(corpus, tmp_path / "run", PRESETS["tiny"], TrainConfig(steps=2, pair_every=2), progress=False)


def test_init_continues_from_saved_weights(tmp_path):
    corpus = tiny_corpus(tmp_path / "corpus")
    cfg = TrainConfig(steps=4, batch_size=4, warmup=1, log_every=1, seed=3)
    first = train(corpus, tmp_path / "first", PRESETS["tiny"], cfg, progress=False)
    # Zero further steps: the continued run's weights are the initial model's.
    same = train(corpus, tmp_path / "same", "small", TrainConfig(steps=0), progress=False,
                 init=tmp_path / "first" / "final")
    assert same.config == first.config  # the saved model's config wins over "small"
    for (name, a), (_, b) in zip(first.model.state_dict().items(), same.model.state_dict().items()):
        if not name.startswith("embed_"):  # the embedding calibration is refitted
            assert torch.equal(a, b), name
    # More steps move them, from there rather than from a fresh initialisation.
    moved = train(corpus, tmp_path / "moved", "tiny", TrainConfig(steps=3, batch_size=4, warmup=1),
                  progress=False, init=tmp_path / "first" / "final")
    fresh = Tokenizer.from_config(PRESETS["tiny"], seed=0)
    name = "patch_embed.weight"
    distance_to_first = (moved.model.state_dict()[name] - first.model.state_dict()[name]).norm()
    distance_to_fresh = (moved.model.state_dict()[name] - fresh.model.state_dict()[name]).norm()
    assert 0 < distance_to_first < distance_to_fresh


def test_loss_curve_puts_pair_terms_in_their_own_panel(tmp_path):
    from spectok_core.model.card import plot_loss_curve, read_loss_log

    corpus = tiny_corpus(tmp_path / "corpus", same_objects=True)
    cfg = TrainConfig(steps=6, batch_size=4, warmup=1, log_every=1, pair_every=2, pair_batch=4, pair_min=5)
    train(corpus, tmp_path / "run", PRESETS["tiny"], cfg, progress=False)
    curves = read_loss_log(tmp_path / "run" / "loss.csv")
    assert {"gaia_xp", "sdss", "pairs: InfoNCE", "pairs: cross χ²"} <= set(curves)
    out = plot_loss_curve(tmp_path / "run" / "loss.csv", tmp_path / "curve.png", phases={3: "pairs on"})
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[0] > 700  # two panels: taller than the one-panel 550 px


def test_cli_trains_with_pairs_and_continues(tmp_path, capsys):
    from spectok_core.cli import main

    corpus = tiny_corpus(tmp_path / "corpus", same_objects=True)
    common = ["--corpus", str(corpus), "--batch-size", "4"]
    assert main(["train", *common, "--out", str(tmp_path / "a"), "--config", "tiny", "--steps", "4",
                 "--pair-every", "2", "--pair-min", "5", "--calibration-shrink", "100"]) == 0
    metadata = json.loads((tmp_path / "a" / "final" / "metadata.json").read_text())
    assert metadata["train_config"]["pair_every"] == 2
    assert metadata["train_config"]["calibration_shrink"] == 100
    assert main(["train", *common, "--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "final"),
                 "--steps", "2"]) == 0
    assert Tokenizer.from_pretrained(tmp_path / "b" / "final").config == PRESETS["tiny"]
    # A latent model warm-started from a folder of the earlier design (no latents), with views.
    assert main(["train", *common, "--out", str(tmp_path / "t"), "--config", "tiny", "--steps", "1"]) == 0
    legacy = json.loads((tmp_path / "t" / "final" / "config.json").read_text())
    legacy["n_latents"] = 0
    (tmp_path / "t" / "final" / "config.json").write_text(json.dumps(legacy))
    old = Tokenizer.from_config(ModelConfig(**legacy), seed=5)
    old.save(tmp_path / "t" / "final")
    assert main(["train", *common, "--out", str(tmp_path / "w"), "--config", "tiny", "--steps", "3",
                 "--warm-start", str(tmp_path / "t" / "final"), "--view-render", "0.5",
                 "--view-contrastive", "0.5"]) == 0
    assert "warm start:" in capsys.readouterr().out
    warm = Tokenizer.from_pretrained(tmp_path / "w" / "final")
    assert warm.config.n_latents == PRESETS["tiny"].n_latents
    assert json.loads((tmp_path / "w" / "final" / "metadata.json").read_text())["train_config"]["view_render"] == 0.5
    # Too few pairs: a clear error, not a traceback.
    assert main(["train", *common, "--out", str(tmp_path / "c"), "--config", "tiny", "--steps", "2",
                 "--pair-every", "2"]) == 1
    assert "same-object pairs" in capsys.readouterr().err
    assert main(["train", *common, "--out", str(tmp_path / "d"), "--config", "tiny", "--steps", "2",
                 "--pair-every", "2", "--pair-min", "5", "--pair-focus", "apogie"]) == 1
    assert "unknown survey 'apogie'" in capsys.readouterr().err


def three_survey_pairs(tmp_path):
    """Pair tables for sdss-gaia_xp (400 pairs), apogee-sdss (100) and apogee-gaia_xp (25)."""
    rng = np.random.default_rng(0)
    return PairIndex(tmp_path, np.array(["x.h5"] * 10), np.arange(10), {
        ("gaia_xp", "sdss"): rng.integers(0, 10, (400, 2)),
        ("apogee", "sdss"): rng.integers(0, 10, (100, 2)),
        ("apogee", "gaia_xp"): rng.integers(0, 10, (25, 2)),
    })


def test_pair_focus_draws_that_surveys_pairs_more_often(tmp_path):
    pairs = three_survey_pairs(tmp_path)
    plain = pairs.draw_weights()
    assert plain[("gaia_xp", "sdss")] == pytest.approx(20 / 35)  # ∝ √count: 20, 10, 5
    focused = pairs.draw_weights({"apogee": 3.0})
    assert focused[("apogee", "sdss")] == pytest.approx(30 / 65)
    assert focused[("apogee", "gaia_xp")] == pytest.approx(15 / 65)
    assert sum(focused.values()) == pytest.approx(1.0)
    # sample() draws with those weights (read side mocked: only the choice of pair is counted).
    spectrum = Spectrum(np.arange(100.0) + 4000, np.ones(100), np.ones(100))
    pairs._read = lambda locations: [spectrum for _ in locations]
    rng = np.random.default_rng(1)
    drawn = [pairs.sample(rng, lambda a, b: 2, {"apogee": 3.0})[:2] for _ in range(3000)]
    share = np.mean(["apogee" in key for key in drawn])
    assert share == pytest.approx(45 / 65, abs=0.03)


def test_pair_focus_is_checked_before_training(tmp_path):
    corpus = tiny_corpus(tmp_path / "corpus", same_objects=True)
    run = tmp_path / "run"
    with pytest.raises(SpectrumError, match="unknown survey 'apogie'"):
        train(corpus, run, PRESETS["tiny"], TrainConfig(steps=2, pair_every=2, pair_focus="apogie"))
    with pytest.raises(SpectrumError, match="needs pair steps"):
        train(corpus, run, PRESETS["tiny"], TrainConfig(steps=2, pair_focus="apogee"))
    with pytest.raises(SpectrumError, match="positive number"):
        train(corpus, run, PRESETS["tiny"], TrainConfig(steps=2, pair_focus_weight=0.0))
    # A known survey without pairs in this corpus (only gaia_xp-sdss here).
    with pytest.raises(SpectrumError, match="includes 'apogee'.*gaia_xp-sdss"):
        train(corpus, run, PRESETS["tiny"], TrainConfig(steps=2, pair_every=2, pair_min=5,
                                                        pair_focus="apogee"))
    assert not (run / "checkpoint").exists()


def test_pair_focus_trains(tmp_path):
    corpus = tiny_corpus(tmp_path / "corpus", same_objects=True)
    cfg = TrainConfig(steps=4, batch_size=4, warmup=1, log_every=1, pair_every=2, pair_batch=4,
                      pair_min=5, pair_focus="sdss", pair_focus_weight=4.0)
    train(corpus, tmp_path / "run", PRESETS["tiny"], cfg, progress=False)
    saved = json.loads((tmp_path / "run" / "final" / "metadata.json").read_text())
    assert saved["train_config"]["pair_focus"] == "sdss"
    assert saved["train_config"]["pair_focus_weight"] == 4.0
