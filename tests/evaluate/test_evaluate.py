"""Every task end to end on a tiny synthetic corpus with a tiny untrained model."""

import re

import numpy as np
import pytest

from spectok_core import Spectrum
from spectok_core.cli import main
from spectok_core.evaluate import EvalConfig, run_evaluation
from spectok_core.evaluate.baselines import common_grid
from spectok_core.evaluate.data import GRID_EDGES, EvalCorpus, draw, rebin
from spectok_core.evaluate.report import FigureSink
from spectok_core.evaluate.tasks import (
    Run,
    chi2_per_pixel,
    make_plan,
    plan_rows,
    real_file_neighbours,
    star_key,
)
from spectok_core.io.mmu import write_mmu_shard
from spectok_core.model import Tokenizer

from . import synthetic_corpus

SECTIONS = ("## Summary", "## 1. Gaia XP", "## 2. MILES and STELIB", "## 3. SpeX", "## 4. Cross-survey label",
            "## 5. Star / galaxy / QSO", "## 6. Cross-survey retrieval", "## 7. Reconstruction",
            "## Sanity check")
TEST_CONFIG = EvalConfig(max_train=100, max_val=20, max_train_per_instrument=50, max_val_per_instrument=20,
                         n_reconstruct=2, n_folds=3, min_pairs=3, mlp_iter=15, max_features=150)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    corpus = synthetic_corpus.build(root / "corpus")
    model = root / "model"
    Tokenizer.from_config("tiny", seed=0).save(model, model_id="tiny-test")
    # A stand-in for ../shared/data/formats: one labelled "SDSS" file (an MMU shard).
    shared = root / "formats"
    wave = np.geomspace(3800.0, 9200.0, 400)
    rng = np.random.default_rng(1)
    files = [synthetic_corpus.make(wave, synthetic_corpus.source_flux(wave, "QSO", 1.0, rng), "sdss",
                                   {"object_id": "file-qso", "class": "QSO", "z": 1.0}, 20, rng)]
    write_mmu_shard(shared / "sdss" / "spec-test.h5", files)
    tok = Tokenizer.from_pretrained(model)
    out = root / "reports"
    logs = []
    path = run_evaluation(corpus, tok, out, cfg=TEST_CONFIG, cache_dir=root / "cache",
                          shared_folder=shared, progress=False, log=logs.append)
    return {"root": root, "corpus": corpus, "model": model, "tok": tok, "out": out, "path": path,
            "logs": logs, "text": path.read_text()}


def test_report_has_every_section_and_its_figures(setup):
    text, out = setup["text"], setup["out"]
    for heading in SECTIONS:
        assert heading in text, heading
    assert "Skipped" not in text.split("## Sanity check")[0], "a task was skipped on the synthetic corpus"
    figures = re.findall(r"\]\(figures/([^)]+\.png)\)", text)
    assert len(figures) >= 8
    for name in figures:
        assert (out / "figures" / name).stat().st_size > 1000
    assert not list(out.glob(".eval-staging-*")), "the staging folder is cleaned up"
    assert "Leung & Bovy 2024" in text


def test_every_table_row_says_real_or_simulated(setup):
    text = setup["text"]
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if len(lines) < 3 or "| data |" not in lines[0]:
            continue
        column = [c.strip() for c in lines[0].strip("|").split("|")].index("data")
        for line in lines[2:]:
            cell = [c.strip() for c in line.strip("|").split("|")][column]
            assert cell.startswith(("real", "simulated")), line


def test_tasks_report_numbers_and_baselines(setup):
    text = setup["text"]
    # Gaia XP: spectok probes and every baseline, 10 test stars.
    section = text.split("## 1. Gaia XP")[1].split("## 2.")[0]
    for method in ("spectok kNN", "spectok ridge", "PCA + kNN", "PCA + ridge", "flux kNN", "MLP on flux"):
        assert f"| {method} | real |" in section, method
    # SpeX: 'galaxy' and 'M' are skipped, the rest parsed.
    section = text.split("## 3. SpeX")[1].split("## 4.")[0]
    assert "| spectok kNN | real |" in section
    # Retrieval: SDSS <-> DESI pairs with baselines, APOGEE <-> Gaia XP without a common grid.
    section = text.split("## 6. Cross-survey retrieval")[1].split("## 7.")[0]
    assert "sdss/sim → desi/sim | simulated | 6 |" in section
    assert "gaia_xp/real → apogee/sim | real + simulated |" in section
    assert "N/A (no common range)" in section
    # Summary: the cross-survey rows where only spectok can answer.
    summary = text.split("## Summary")[1].split("## 1.")[0]
    assert "only spectok can (no common grid)" in summary
    assert "classification" in summary and "redshift galaxy" in summary
    # Sanity: the stand-in file and its neighbours.
    section = text.split("## Sanity check")[1]
    assert "spec-test.h5 | sdss | real | QSO" in section


def test_rerun_finds_every_embedding_in_the_cache(setup):
    assert "(0 embeddings cached)" in setup["logs"][0]
    ctx = EvalCorpus(setup["corpus"], setup["tok"], cache_dir=setup["root"] / "cache", progress=False)
    rows = plan_rows(make_plan(ctx, TEST_CONFIG))
    assert ctx.has_embedding[rows].all()
    ctx.load(rows)
    assert ctx.embedded_now == 0
    # Another model (other weights) does not see these embeddings.
    other = EvalCorpus(setup["corpus"], Tokenizer.from_config("tiny", seed=1),
                       cache_dir=setup["root"] / "cache", progress=False)
    assert not other.has_embedding.any()


def test_sanity_section_skips_cleanly_without_shared_files(setup, tmp_path):
    ctx = EvalCorpus(setup["corpus"], setup["tok"], cache_dir=setup["root"] / "cache", progress=False)
    run = Run(ctx, TEST_CONFIG, FigureSink(tmp_path / "figures"))
    section = real_file_neighbours(run, tmp_path / "absent")
    assert section.text[-1].startswith("*Skipped:") and "absent" in section.text[-1]
    assert not section.tables


def test_cached_embeddings_equal_fresh_ones(setup):
    ctx = EvalCorpus(setup["corpus"], setup["tok"], cache_dir=setup["root"] / "cache", progress=False)
    rows = np.flatnonzero(ctx.has_embedding)[:6]
    assert rows.size == 6
    fresh = setup["tok"].embed([s for _, s in ctx.spectra(rows)])
    np.testing.assert_allclose(ctx.embed(rows), fresh, atol=1e-5)


def test_plan_keeps_splits_apart(setup):
    ctx = EvalCorpus(setup["corpus"], setup["tok"], progress=False)
    plan = make_plan(ctx, TEST_CONFIG)
    train, val, test = plan["gaia_xp"]
    assert (len(train), len(val), len(test)) == (30, 5, 10)
    splits = ctx.table["split"].to_numpy()
    assert set(splits[train]) == {"train"} and set(splits[test]) == {"test"}
    assert set(plan["classes"]) == {"sdss/sim", "desi/sim"}
    assert len(plan_rows(plan)) < len(ctx.table)  # val/train rows of unused instruments are not read


def test_common_grid_is_the_overlap_or_none(setup):
    ctx = EvalCorpus(setup["corpus"], setup["tok"], cache_dir=setup["root"] / "cache", progress=False)
    sdss = ctx.select(instrument="sdss/sim")
    desi = ctx.select(instrument="desi/sim")
    apogee = ctx.select(instrument="apogee/sim")
    ctx.load(np.concatenate([sdss, desi, apogee]))
    grid = common_grid(ctx, sdss, desi)
    lo, hi = grid.wave_range
    assert 3800 <= lo < 3830 and 9150 < hi <= 9200
    assert common_grid(ctx, sdss, apogee) is None
    flux = ctx.flux(sdss[:3], grid.columns, grid.bin_factor)
    assert flux.shape[0] == 3 and np.allclose(np.median(flux, axis=1), 1.0)


def test_rebin_averages_and_interpolates_masked_pixels():
    wave = np.linspace(4000.0, 6000.0, 2001)
    flux = np.where(wave < 5000, 1.0, 3.0).astype(np.float32)
    mask = np.zeros(wave.size, bool)
    mask[900:1000] = True  # bridged by interpolation between good neighbours
    start, values = rebin(Spectrum(wave, flux, np.ones(wave.size), mask, "unknown"))
    centres = np.sqrt(GRID_EDGES[start : start + values.size] * GRID_EDGES[start + 1 : start + values.size + 1])
    assert GRID_EDGES[start] >= 4000 and GRID_EDGES[start + values.size] <= 6000
    assert np.allclose(values[centres < 4880], 1.0) and np.allclose(values[centres > 5010], 3.0)


def test_chi2_is_one_for_noise_level_residuals():
    rng = np.random.default_rng(0)
    wave = np.linspace(4000.0, 6000.0, 5000)
    model = np.full(wave.size, 100.0)
    flux = model + rng.standard_normal(wave.size)  # sigma 1, S/N 100
    spectrum = Spectrum(wave, flux, np.ones(wave.size), survey="unknown")
    rec = Spectrum(wave, model, np.ones(wave.size), survey="unknown")
    with_floor, plain = chi2_per_pixel(spectrum, rec, error_floor=0.0)
    assert with_floor == pytest.approx(1.0, abs=0.05) and plain == pytest.approx(with_floor)
    # A 1 % floor at level 100 adds sigma 1 in quadrature: chi2 halves.
    with_floor, plain = chi2_per_pixel(spectrum, rec, error_floor=0.01)
    assert with_floor == pytest.approx(0.5, abs=0.03) and plain == pytest.approx(1.0, abs=0.05)


def test_star_names_match_across_libraries():
    assert star_key("HD 002857") == star_key("HD2857") == "HD2857"
    assert star_key("BD+17 4708") == "BD+174708"


def test_cli_eval(setup, tmp_path, capsys, monkeypatch):
    import spectok_core.evaluate as evaluate

    calls = []
    monkeypatch.setattr(evaluate, "run_evaluation", lambda *a, **k: calls.append((a, k)))
    code = main(["eval", "--corpus", str(setup["corpus"]), "--model", str(setup["model"]),
                 "--out", str(tmp_path / "cli"), "--quick", "--cache", str(tmp_path / "cache")])
    assert code == 0
    (corpus, tok, out), options = calls[0]
    assert corpus == setup["corpus"] and out == tmp_path / "cli" and tok.model_id == "tiny-test"
    assert options == {"cache_dir": tmp_path / "cache", "quick": True}
    assert main(["eval", "--corpus", str(tmp_path / "missing"), "--model", str(setup["model"])]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--corpus", str(setup["corpus"]), "--model", str(tmp_path / "no-model")]) == 1
    assert "lacks model.safetensors" in capsys.readouterr().err


def test_corpus_without_real_collections_skips_those_tasks_cleanly(tmp_path):
    import shutil

    corpus = synthetic_corpus.build(tmp_path / "corpus")
    shutil.rmtree(corpus / "real")
    shutil.rmtree(corpus / "sim" / "apogee")
    path = run_evaluation(corpus, Tokenizer.from_config("tiny", seed=0), tmp_path / "out", cfg=TEST_CONFIG,
                          shared_folder=tmp_path / "absent", progress=False, log=lambda *_: None)
    text = path.read_text()
    for heading in ("## 1. Gaia XP", "## 3. SpeX", "## 4. Cross-survey label"):
        assert "*Skipped:" in text.split(heading)[1].split("\n## ")[0], heading
    assert "| all (pooled) |" in text  # SDSS + DESI still pool
    assert "sdss/sim → desi/sim" in text


def test_capped_samples_of_two_instruments_keep_the_same_objects():
    ids = np.array([f"object-{i}" for i in range(500)])
    first = draw(np.arange(500), 50, 0, ids)
    second = draw(np.arange(500, 1000), 50, 0, ids)  # the same objects seen by another instrument
    assert len(first) == 50 and np.array_equal(first + 500, second)
    assert not np.array_equal(draw(np.arange(500), 50, 1, ids), first)  # the seed changes the draw


def test_instrument_probe_sees_instrument_signal_and_not_object_signal():
    from spectok_core.evaluate.invariance import instrument_probe, shared_objects

    rng = np.random.default_rng(0)
    n_objects, instruments = 120, ["sdss", "desi", "boss"]
    objects = rng.standard_normal((n_objects, 16))
    names = np.repeat(instruments, n_objects)
    groups = np.tile([f"o{i}" for i in range(n_objects)], len(instruments))
    # One object, one place whatever the instrument (plus noise): chance-level probe.
    invariant = np.tile(objects, (len(instruments), 1)) + 0.05 * rng.standard_normal((len(names), 16))
    accuracy, chance = instrument_probe(invariant, names, groups)
    assert chance == pytest.approx(1 / 3)
    assert accuracy < chance + 0.1
    # An instrument offset along one direction: the probe reads it off.
    offset = invariant + 4.0 * np.repeat(np.eye(3, 16), n_objects, axis=0)
    assert instrument_probe(offset, names, groups)[0] > 0.95
    # Only objects seen by at least two instruments are used.
    rows, got, ids = shared_objects({"a": np.arange(4), "b": np.arange(10, 13)},
                                    {"a": np.array(["x", "y", "z", "w"]), "b": np.array(["x", "z", "q"])})
    assert rows.tolist() == [0, 2, 10, 11] and got.tolist() == ["a", "a", "b", "b"]
    assert ids.tolist() == ["x", "z", "x", "z"]


def test_report_has_the_survey_invariance_probe(setup):
    part = setup["text"].split("Survey invariance")[1]
    table = [ln for ln in part.splitlines() if ln.startswith("| all instruments")]
    assert table, "the probe ran on the synthetic corpus"
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    accuracy, chance = float(cells[4]), float(cells[5])
    assert 0 <= accuracy <= 1 and 0 < chance < 1
