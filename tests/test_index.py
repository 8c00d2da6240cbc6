"""The search index: build -> load -> search, filters, refusals, crash safety, resume, map, CLI."""

import json
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from spectok_core import Spectrum, SpectrumError, index_build, read_spectra
from spectok_core import index as index_module
from spectok_core.cli import main
from spectok_core.index import SpectrumIndex, segments_wave, select_rows
from spectok_core.index_build import describe_grid, select_demo
from spectok_core.io.mmu import write_mmu_shard
from spectok_core.model import Tokenizer
from tests.index_corpus import GRIDS, N_SPECTRA, N_STARS, synthetic_spectrum


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus_dir, tok):
    """The main test index: exact FAISS, a real UMAP map."""
    if "umap" not in sys.modules:
        # umap-learn's numba kernels take 15-40 s to compile on 2 busy cores; interpreted,
        # the same code fits 40 points in a few seconds.
        import numba

        numba.config.DISABLE_JIT = True
    out = tmp_path_factory.mktemp("indexes") / "main"
    epochs, index_build.UMAP_EPOCHS = index_build.UMAP_EPOCHS, 50
    try:
        SpectrumIndex.build(corpus_dir, out, tok, progress=False, umap=True)
    finally:
        index_build.UMAP_EPOCHS = epochs
    return out


@pytest.fixture(scope="module")
def idx(built, tok):
    return SpectrumIndex.load(built, tokenizer=tok)


def test_build_load_search_round_trip(idx, tok, corpus_dir):
    manifest = idx.manifest
    assert len(idx) == N_SPECTRA and manifest["n"] == N_SPECTRA
    assert manifest["metric"] == "inner_product" and manifest["factory"] == "Flat"
    assert manifest["dimension"] == tok.config.d_embed and manifest["weights_hash"] == tok.weights_hash
    assert manifest["counts"]["survey"]["gaia_xp"] == 8 and manifest["counts"]["origin"]["real"] == 22
    assert manifest["map"]["method"] == "umap" and idx.coords.shape == (N_SPECTRA, 2)
    # Each corpus spectrum, embedded afresh, finds itself first.
    for shard in sorted(corpus_dir.rglob("*.h5")):
        spectra = read_spectra(shard)
        hits = idx.search(tok.embed(spectra), k=3)
        top = hits[hits["rank"] == 1]
        assert list(top["object_id"]) == [s.meta["object_id"] for s in spectra]
        assert np.allclose(top["similarity"], 1.0, atol=1e-5)
        assert (hits.groupby("query")["similarity"].apply(lambda s: s.is_monotonic_decreasing)).all()
    one = idx.search(idx.embedding(7), k=5)
    assert list(one.columns[:3]) == ["rank", "similarity", "row"] and "query" not in one
    assert one["row"].iloc[0] == 7 and len(one) == 5


def test_display_copy_matches_the_corpus(idx, corpus_dir):
    originals = {s.meta["object_id"]: s for shard in corpus_dir.rglob("*.h5") for s in read_spectra(shard)}
    for row in range(len(idx)):
        copy = idx.spectrum(row)
        original = originals[copy.meta["object_id"]]
        assert copy.survey == original.survey and len(copy) == len(original)
        assert np.max(np.abs(copy.wave - original.wave)) < 1e-3 * np.diff(original.wave).min()
        assert np.array_equal(copy.mask, original.mask)
        good = original.good
        assert np.allclose(copy.flux[good], original.flux[good], rtol=2e-3, atol=1e-3)
        assert copy.meta["ivar_nominal"] and copy.meta["index_row"] == row
    # Regular grids are two numbers per segment; only the irregular SpeX-like grids store waves.
    surveys_by_segments = pd.Series(idx.metadata["survey"].astype(str)).groupby(idx._rows["n_segments"]).unique()
    assert sorted(surveys_by_segments[0]) == ["spex"] and sorted(surveys_by_segments[2]) == ["lamost_mrs"]
    assert set(idx._segments["grid"]) == {index_module.LINEAR, index_module.LOG, index_module.AIR_LINEAR}
    assert idx._wave.size == 4 * len(GRIDS["spex"])
    assert np.allclose(idx.metadata["wave_min"], [idx.spectrum(r).wave[0] for r in range(len(idx))])
    assert np.allclose(idx.metadata["wave_max"], [idx.spectrum(r).wave[-1] for r in range(len(idx))])


def test_grid_description_round_trips():
    for survey, wave in GRIDS.items():
        segments = np.array(describe_grid(wave), dtype=index_module.SEGMENT_DTYPE)
        assert len(segments) == {"spex": 0, "lamost_mrs": 2}.get(survey, 1)
        if len(segments):
            error = np.abs(segments_wave(segments) - wave).max()
            assert error < 1e-6 * np.diff(wave).min()


def test_binned_display_copies_keep_grids_compact_and_arms_apart():
    rng = np.random.default_rng(3)
    for survey in ("sdss", "desi", "lamost_mrs", "miles"):
        wave = GRIDS[survey]
        flux = 1.0 + 0.2 * np.sin(wave / 50.0) + rng.normal(0, 0.01, wave.size)
        mask = np.zeros(wave.size, bool)
        mask[10:40] = True  # a run of bad pixels wider than a bin
        spectrum = Spectrum(wave, flux, np.full(wave.size, 1e4), mask, survey)
        binned = index_build.binned_for_display(spectrum, 120)
        m = binned.meta["display_binned"]
        assert len(binned) <= 120 + 2 and len(binned) >= len(wave) // m - 2
        # Linear and log-linear grids stay regular (two numbers per arm), and no bin spans the gap.
        assert len(describe_grid(binned.wave)) == len(describe_grid(wave))
        if survey == "lamost_mrs":
            assert not np.any((binned.wave > 5350) & (binned.wave < 6300))
        # Bins of bad pixels only are masked; the rest average the good ones (ivar adds up).
        assert binned.mask[15 // m + 1 : 40 // m - 1].all() and not binned.mask[60 // m :].any()
        good = ~binned.mask
        assert np.allclose(binned.ivar[good][-1], m * 1e4)
        expected = np.interp(binned.wave, wave, 1.0 + 0.2 * np.sin(wave / 50.0))
        assert np.abs(binned.flux[good] - expected[good]).max() < 0.2 * (1 - np.cos(m * np.diff(wave).max() / 50.0)) + 0.02
    short = Spectrum(GRIDS["gaia_xp"], np.ones(343), np.ones(343), survey="gaia_xp")
    assert index_build.binned_for_display(short, 1500) is short
    # Binning that would leave too few good pixels keeps the spectrum whole rather than failing.
    sparse_mask = np.ones(2000, bool)
    sparse_mask[:40] = False  # 40 good pixels, all in the first of 20 bins of 100
    sparse = Spectrum(np.linspace(4000, 8000, 2000), np.ones(2000), np.ones(2000), sparse_mask, "desi")
    assert index_build.binned_for_display(sparse, 20) is sparse


def test_an_index_with_binned_display_copies(tmp_path, corpus_dir, tok, capsys):
    idx = SpectrumIndex.build(corpus_dir, tmp_path / "binned", tok, progress=False, umap=False,
                              display_pixels=200)
    assert idx.manifest["display_pixels"] == 200
    full = {r: len(idx.spectrum(r)) for r in range(len(idx))}
    assert max(full.values()) <= 202 and min(full.values()) > 100
    row = int(np.flatnonzero(idx.metadata["survey"].astype(str) == "sdss")[0])
    copy = idx.spectrum(row)
    assert copy.wave[0] >= idx.metadata["wave_min"].iloc[row] and copy.wave[-1] <= idx.metadata["wave_max"].iloc[row]
    with pytest.raises(SpectrumError, match="display-pixels 10"):
        SpectrumIndex.build(corpus_dir, tmp_path / "tiny", tok, progress=False, umap=False, display_pixels=10)


def exact_top(idx, query, keep, k):
    rows = np.flatnonzero(keep)
    sims = np.asarray(idx._embeddings)[rows] @ (query / np.linalg.norm(query))
    return list(rows[np.argsort(-sims, kind="stable")][:k])


@pytest.mark.parametrize("where, expect", [
    ({"survey": ["sdss", "desi"]}, lambda m: m["survey"].isin(["sdss", "desi"])),
    ({"class": "qso"}, lambda m: m["class"] == "QSO"),  # scalar, case-insensitive
    ({"origin": "real", "class": ["STAR"]}, lambda m: (m["origin"] == "real") & (m["class"] == "STAR")),
    ({"z": (0.1, 0.5)}, lambda m: m["z"].between(0.1, 0.5)),
    ({"teff": (None, 6000)}, lambda m: m["teff"] <= 6000),
    ({"z": None}, lambda m: m["z"].isna()),
])
def test_filters(idx, where, expect):
    meta = idx.metadata
    keep = expect(meta).fillna(False).to_numpy(bool)
    assert np.array_equal(select_rows(meta, where), keep)
    query = idx.embedding(3) + 0.1 * idx.embedding(30)
    hits = idx.search(query, k=6, where=where)
    assert len(hits) == min(6, keep.sum()) and keep[hits["row"]].all()
    assert list(hits["row"]) == exact_top(idx, query, keep, 6)


def test_filter_errors_and_empty_results(idx):
    with pytest.raises(SpectrumError, match="unknown filter key.*'colour'.*valid keys: .*survey"):
        idx.search(idx.embedding(0), where={"colour": "red"})
    with pytest.raises(SpectrumError, match="ranges need a numeric column"):
        idx.search(idx.embedding(0), where={"survey": ("a", "b")})
    with pytest.raises(SpectrumError, match="16-dimensional"):
        idx.search(np.ones(5))
    empty = idx.search(idx.embedding(0), where={"survey": "apogee"})
    assert empty.empty and "similarity" in empty


def test_filtered_search_on_an_approximate_index(tmp_path, corpus_dir, tok, monkeypatch):
    hnsw = SpectrumIndex.build(corpus_dir, tmp_path / "hnsw", tok, factory="HNSW32,Flat",
                               progress=False, umap=False)
    assert "efSearch" in hnsw.manifest["search_params"]
    query = hnsw.embedding(12)
    for fraction in (0.0, 1.0):  # the FAISS selector path, then the exact subset path
        monkeypatch.setattr(index_module, "SUBSET_FRACTION", fraction)
        for where in ({"class": "GALAXY"}, {"object_id": "desi-qso-9"}, {"survey": "miles"}):
            keep = select_rows(hnsw.metadata, where)
            hits = hnsw.search(query, k=4, where=where)
            assert list(hits["row"]) == exact_top(hnsw, query, keep, 4)


def test_refuses_an_index_built_with_other_weights(built, tmp_path):
    other = Tokenizer.from_pretrained(Tokenizer.from_config("tiny", seed=1).save(tmp_path / "other"))
    with pytest.raises(SpectrumError, match=r"not comparable.*spectok index build --corpus .* --model"):
        SpectrumIndex.load(built, tokenizer=other)
    assert len(SpectrumIndex.load(built, tokenizer=False)) == N_SPECTRA  # browsing needs no model


def test_damaged_indexes_give_clear_errors(built, tmp_path):
    def fresh():
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(built, copy)
        return copy

    copy = fresh()
    (copy / "manifest.json").write_text('{"format_version": 1, "n": ')
    with pytest.raises(SpectrumError, match="manifest.json is damaged.*spectok index build"):
        SpectrumIndex.load(copy, tokenizer=False)
    copy = fresh()
    (copy / "manifest.json").unlink()
    with pytest.raises(SpectrumError, match="no manifest.json"):
        SpectrumIndex.load(copy, tokenizer=False)
    copy = fresh()
    (copy / "coords.npy").unlink()
    with pytest.raises(SpectrumError, match="missing coords.npy"):
        SpectrumIndex.load(copy, tokenizer=False)
    copy = fresh()
    data = (copy / "embeddings.npy").read_bytes()
    (copy / "embeddings.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpectrumError, match="truncated or damaged"):
        SpectrumIndex.load(copy, tokenizer=False)
    copy = fresh()
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(SpectrumError, match="format version 99"):
        SpectrumIndex.load(copy, tokenizer=False)
    with pytest.raises(SpectrumError, match="no index folder"):
        SpectrumIndex.load(tmp_path / "nowhere", tokenizer=False)


def test_interrupted_build_keeps_the_old_index_and_resumes(built, corpus_dir, tok, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    shutil.copytree(built, out)
    old_manifest = (out / "manifest.json").read_text()
    work = tmp_path / ".idx.building"
    monkeypatch.setattr(index_build, "CHUNK_SIZE", 8)
    n_chunks = -(-N_STARS // 8)
    embed_chunk = index_build._embed_chunk
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash while embedding")
        return embed_chunk(*args, **kwargs)

    def build():
        return SpectrumIndex.build(corpus_dir, out, tok, where={"class": "STAR"}, progress=False, umap=False)

    def old_index_intact():
        assert (out / "manifest.json").read_text() == old_manifest
        assert len(SpectrumIndex.load(out, tokenizer=tok)) == N_SPECTRA
        assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.building", ".idx.lock", "idx"]

    monkeypatch.setattr(index_build, "_embed_chunk", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build()
    old_index_intact()
    assert len(list((work / "chunks").glob("chunk-*.npz"))) == 2
    assert not list(work.rglob("*.part"))

    # Resumes the embedding (only the missing chunks), then crashes in the final stage.
    calls.clear()
    monkeypatch.setattr(index_build, "_embed_chunk", lambda *a, **k: (calls.append(1), embed_chunk(*a, **k))[1])
    monkeypatch.setattr(index_build, "_fit_map", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build()
    assert len(calls) == n_chunks - 2
    old_index_intact()

    monkeypatch.undo()
    monkeypatch.setattr(index_build, "CHUNK_SIZE", 8)
    calls.clear()
    monkeypatch.setattr(index_build, "_embed_chunk", lambda *a, **k: (calls.append(1), embed_chunk(*a, **k))[1])
    new = build()
    assert calls == [] and len(new) == N_STARS and set(new.metadata["class"]) == {"STAR"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "idx"]  # work and old copy gone
    # The resumed embeddings are the ones a fresh embedding gives.
    original = read_spectra(corpus_dir / "real" / "gaia_xp" / "gaia_xp-0.h5")
    hits = new.search(tok.embed(original), k=1)
    assert list(hits["object_id"]) == [s.meta["object_id"] for s in original]


def test_a_new_plan_discards_an_unfinished_build(corpus_dir, tok, tmp_path, monkeypatch):
    monkeypatch.setattr(index_build, "_fit_map", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        SpectrumIndex.build(corpus_dir, tmp_path / "x", tok, where={"survey": "sdss"}, progress=False)
    monkeypatch.undo()
    built = SpectrumIndex.build(corpus_dir, tmp_path / "x", tok, where={"survey": "miles"},
                                progress=False, umap=False)
    assert set(built.metadata["survey"]) == {"miles"} and len(built) == 6


def test_build_refuses_to_replace_a_folder_that_is_not_an_index(corpus_dir, tok, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SpectrumError, match="not an index folder"):
        SpectrumIndex.build(corpus_dir, tmp_path / "mine", tok, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_place_on_the_umap_map(idx):
    coords = idx.coords
    for row in (0, 11, 25):  # an indexed spectrum lands on its own point
        assert np.allclose(idx.place(idx.embedding(row)), coords[row])
    # Leave-one-out: placed from its neighbours without itself, near its true point.
    scale = np.median(np.linalg.norm(coords[:, None] - coords[None], axis=-1))
    for method in ("neighbours", "umap"):
        errors = []
        for row in range(0, len(idx), 3):
            sims, rows = idx._neighbours(idx.embedding(row)[None], None, method, extra=1)
            keep = rows != row
            placed = idx._place_from(sims[keep], rows[keep], method)
            errors.append(np.linalg.norm(placed - coords[row]))
        assert np.all(np.isfinite(errors)) and np.median(errors) < 0.3 * scale, (method, np.median(errors), scale)
    x, y = idx.place(idx.embedding(3) + 0.05 * idx.embedding(4), method="umap")
    assert np.isfinite([x, y]).all()


def test_place_on_a_pca_map_is_a_projection(corpus_dir, tok, tmp_path):
    pca = SpectrumIndex.build(corpus_dir, tmp_path / "pca", tok, where={"class": ["GALAXY", "QSO"]},
                              progress=False, umap=False)
    assert pca.manifest["map"]["method"] == "pca"
    for row in range(len(pca)):
        assert np.allclose(pca.place(pca.embedding(row)), pca.coords[row], atol=1e-5)


def test_select_demo_mixes_every_group_real_first():
    meta = pd.DataFrame({
        "survey": ["a"] * 50 + ["b"] * 5 + ["c"] * 20,
        "class": ["STAR"] * 30 + ["QSO"] * 20 + ["STAR"] * 5 + ["GALAXY"] * 20,
        "origin": ["simulated"] * 25 + ["real"] * 5 + ["simulated"] * 45,
    })
    chosen = select_demo(meta, max_total=20)
    picked = meta.iloc[chosen]
    assert len(chosen) == 20 == len(set(chosen))
    assert picked.groupby(["survey", "class"]).size().to_dict() == {
        ("a", "QSO"): 5, ("a", "STAR"): 5, ("b", "STAR"): 5, ("c", "GALAXY"): 5}
    assert (picked[(picked["survey"] == "a") & (picked["class"] == "STAR")]["origin"] == "real").all()
    assert len(select_demo(meta, n_per_group=2, max_total=100)) == 8


def test_cli_build_and_search(corpus_dir, model_dir, built, tmp_path, capsys):
    small = tmp_path / "small"
    rc = main(["index", "build", "--corpus", str(corpus_dir), "--out", str(small), "--model",
               str(model_dir), "--max-spectra", "14", "--no-umap"])
    assert rc == 0
    made = SpectrumIndex.load(small, tokenizer=False)
    # 4 real SDSS first (select_demo), then one of each (survey, class) group
    assert len(made) == 14 and set(made.metadata["survey"]) == set(GRIDS)

    rng = np.random.default_rng(5)
    query = tmp_path / "query.h5"
    write_mmu_shard(query, [synthetic_spectrum("sdss", "QSO", "simulated", 90, rng),
                            synthetic_spectrum("desi", "STAR", "simulated", 91, rng)])
    out = tmp_path / "hits.csv"
    capsys.readouterr()
    rc = main(["search", str(query), "-k", "3", "--index", str(built), "--model", str(model_dir),
               "--survey", "sdss", "gaia_xp", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "sdss-qso-90" in printed and "object_id" in printed
    hits = pd.read_csv(out)
    assert len(hits) == 6 and set(hits["query"]) == {0, 1}
    assert set(hits["survey"]) <= {"sdss", "gaia_xp"}
    assert {"rank", "similarity", "class", "z", "object_id", "query_object_id"} <= set(hits.columns)
    # Each spectrum's gated estimates follow its hits, as the Search page computes them.
    from spectok_core import explore, read_spectra

    first = read_spectra(query)[0]
    expected = explore.estimates_lines(explore.against_file(
        explore.gated_estimates(hits[hits["query"] == 0].reset_index(drop=True), first), first))
    estimate_lines = [line for line in printed.splitlines() if line.startswith("# neighbour estimates")]
    assert len(estimate_lines) == 2 and estimate_lines[0].endswith(": " + "; ".join(expected))
    assert "class (vote): " in estimate_lines[0]

    from astropy.table import Table

    rc = main(["search", str(query), "--which", "1", "-k", "2", "--index", str(built), "--model",
               str(model_dir), "--where", "teff=3000:", "--out", str(tmp_path / "hits.ecsv")])
    table = Table.read(tmp_path / "hits.ecsv", format="ascii.ecsv")
    assert rc == 0 and len(table) == 2 and set(table["query"]) == {1} and (table["teff"] >= 3000).all()

    capsys.readouterr()
    assert main(["search", str(query), "--index", str(built), "--where", "colour=red"]) == 1
    assert "unknown filter key" in capsys.readouterr().err
    assert main(["search", str(query), "--index", str(built), "--out", str(tmp_path / "x.txt")]) == 1
    assert main(["search", str(query), "--which", "5", "--index", str(built), "--model", str(model_dir)]) == 1
    assert "error:" in capsys.readouterr().err


# -- an index is not trusted blindly (issue 11) --------------------------------------------------


def _copy(built, tmp_path, name="copy"):
    copy = tmp_path / name
    shutil.copytree(built, copy)
    return copy


def test_tampered_index_files_are_refused_by_their_hashes(built, tmp_path):
    copy = _copy(built, tmp_path)
    data = bytearray((copy / "index.faiss").read_bytes())
    data[-400:-200] = bytes(200)  # same size, other vectors
    (copy / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(SpectrumError, match=r"index.faiss does not match the sha256"):
        SpectrumIndex.load(copy, tokenizer=False)
    copy = _copy(built, tmp_path, "shuffled")
    table = pd.read_parquet(copy / "metadata.parquet")
    table.iloc[::-1].reset_index(drop=True).to_parquet(copy / "metadata.parquet", index=False)
    with pytest.raises(SpectrumError, match=r"metadata.parquet (does not match the sha256|has \d+ bytes)"):
        SpectrumIndex.load(copy, tokenizer=False)


def test_large_indexes_check_sizes_at_load_and_verify_hashes_in_full(built, tmp_path, monkeypatch):
    from spectok_core import index_check

    copy = _copy(built, tmp_path)
    index = SpectrumIndex.load(copy, tokenizer=False)
    query = index.embedding(0)
    data = bytearray((copy / "index.faiss").read_bytes())
    at = len(data) - 8 * index.dimension * 4  # in the flat vectors, which end the file
    data[at : at + 64] = np.full(16, 3e37, np.float32).tobytes()  # "similarities around 6e37"
    (copy / "index.faiss").write_bytes(bytes(data))
    monkeypatch.setattr(index_check, "HASH_AT_LOAD", 0)  # as if it were too large to hash
    damaged = SpectrumIndex.load(copy, tokenizer=False)
    with pytest.raises(SpectrumError, match="similarities beyond 1.*spectok index verify"):
        damaged.search(query, k=N_SPECTRA)
    with pytest.raises(SpectrumError, match="does not match the sha256"):
        index_check.verify(copy)
    assert main(["index", "verify", str(copy)]) == 1
    assert main(["index", "verify", str(built)]) == 0


def test_rows_pointing_outside_their_files_are_refused(built, tmp_path):
    from spectok_core.index_check import record_hashes

    copy = _copy(built, tmp_path)
    rows = np.load(copy / "display" / "rows.npy")
    rows["n_pixels"][3] = 1_000_000_000  # a display read of 8 GB
    np.save(copy / "display" / "rows.npy", rows)
    with pytest.raises(SpectrumError, match="rows.npy does not match the sha256"):
        SpectrumIndex.load(copy, tokenizer=False)
    record_hashes(copy)  # even with a manifest that vouches for the edit
    with pytest.raises(SpectrumError, match=r"rows.npy: row 3 points to a pixel count out of range"):
        SpectrumIndex.load(copy, tokenizer=False)
    rows["n_pixels"][3] = rows["n_pixels"][4]
    rows["flux_offset"][3] = 10**12
    np.save(copy / "display" / "rows.npy", rows)
    record_hashes(copy)
    with pytest.raises(SpectrumError, match=r"row 3 points to flux beyond display/flux.npy"):
        SpectrumIndex.load(copy, tokenizer=False)


def test_non_finite_embeddings_are_refused(built, tmp_path):
    from spectok_core.index_check import record_hashes

    copy = _copy(built, tmp_path)
    embeddings = np.load(copy / "embeddings.npy")
    embeddings[5, 7] = np.nan
    np.save(copy / "embeddings.npy", embeddings)
    record_hashes(copy)
    with pytest.raises(SpectrumError, match="embeddings.npy holds NaN or infinite"):
        SpectrumIndex.load(copy, tokenizer=False)


@pytest.mark.parametrize("change, field", [
    ({"files": []}, "files"), ({"n": "44"}, "n"), ({"dimension": -3}, "dimension"),
    ({"map": {"method": "umap", "a": "x", "b": 1.0}}, "map.a"),
    ({"search_params": {"efSearch": 0}}, "search_params"),
    ({"files": {"../../etc/passwd": {"bytes": 1, "sha256": "0" * 64}}}, "files"),
])
def test_a_manifest_of_the_wrong_structure_names_the_field(built, tmp_path, change, field):
    copy = _copy(built, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(SpectrumError, match=rf"field '{re.escape(field)}'"):
        SpectrumIndex.load(copy, tokenizer=False)


def test_a_manifest_without_hashes_is_refused(built, tmp_path):
    copy = _copy(built, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = {name: record["bytes"] for name, record in manifest["files"].items()}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SpectrumError, match="older spectok records sizes only"):
        SpectrumIndex.load(copy, tokenizer=False)


def test_the_shipped_demo_index_records_and_passes_its_hashes():
    manifest = json.loads((index_module.DEFAULT_INDEX / "manifest.json").read_text())
    assert all(len(record["sha256"]) == 64 for record in manifest["files"].values())
    assert len(SpectrumIndex.load(tokenizer=False)) == manifest["n"]


def test_a_second_build_into_the_same_folder_stops(corpus_dir, tok, tmp_path):
    import subprocess

    out = tmp_path / "idx"
    holder = subprocess.Popen(  # another process building into the same --out
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from spectok_core.index_build import build_lock\n"
         f"with build_lock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SpectrumError, match=r"another `spectok index build` is writing .*idx"):
            SpectrumIndex.build(corpus_dir, out, tok, where={"survey": "miles"}, progress=False,
                                umap=False)
        assert not out.exists() and not (tmp_path / ".idx.building").exists()
    finally:
        holder.kill()
        holder.wait()
    built = SpectrumIndex.build(corpus_dir, out, tok, where={"survey": "miles"}, progress=False,
                                umap=False)  # the lock died with its process
    assert len(built) == 6
    assert index_build._part(out / "a.npy") != index_build._part(out / "a.npy")


def test_format_hits_shows_missing_text_as_a_dash():
    from spectok_core.index import format_hits

    hits = pd.DataFrame({"rank": [1, 2], "similarity": [0.9, 0.8], "survey": ["desi", "sdss"],
                         "origin": ["real", None], "class": [np.nan, "QSO"], "z": [np.nan, 2.0],
                         "object_id": ["a", "b"]})
    first, second = format_hits(hits).splitlines()[1:]
    assert "nan" not in first and "None" not in second
    assert first.split()[3:5] == ["real", "-"] and second.split()[3:6] == ["-", "QSO", "2.0000"]
