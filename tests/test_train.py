"""Training: a tiny model on a tiny corpus; checkpoints, resume, determinism."""

import json

import numpy as np
import pytest

from spectok_core import Spectrum, surveys
from spectok_core.io.mmu import write_mmu_shard
from spectok_core.model import PRESETS, Tokenizer
from spectok_core.train import TrainConfig, lr_at, open_corpus, train


def tiny_corpus(folder, n=24):
    rng = np.random.default_rng(0)
    for key, n_pix in (("sdss", 600), ("gaia_xp", None)):
        wave = surveys.get(key).native_grid()[:n_pix]
        spectra = []
        for i in range(n):
            teff = rng.uniform(3500, 9000)
            flux = 1.0 / (wave / 5000.0) ** 5 / np.expm1(1.4388e8 / (wave * teff))
            flux /= np.median(flux)
            ivar = np.full(wave.size, 400.0)
            flux = flux + rng.standard_normal(wave.size) / 20.0
            split = "train" if i < n - 4 else "val"
            spectra.append(Spectrum(wave, flux, ivar, survey=key,
                                    meta={"object_id": f"{key}-{i}", "split": split}))
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


def test_train_resume_matches_uninterrupted(tmp_path):
    corpus = tiny_corpus(tmp_path / "corpus")
    cfg = TrainConfig(steps=12, batch_size=4, warmup=2, checkpoint_every=6, log_every=1, seed=3)
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
