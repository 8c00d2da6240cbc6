"""Index builds past one machine (issue 14): any source, parts, resume, Dask, IVF-PQ.

The Dask tests start one LocalCluster of 2 single-threaded worker processes for the
module (processes=True, as on a real cluster) and reach it by its tcp:// address,
so the ``--scheduler tcp://HOST:8786`` path is what they exercise.
"""

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from spectok_core import SpectrumError, index_build
from spectok_core.index import SpectrumIndex
from spectok_core.index_format import exact_knn, rerank_search
from spectok_core.io.mmu import write_mmu_shard
from tests.index_corpus import MIX, N_SPECTRA, synthetic_spectrum

N_CSV = 5


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory):
    """Survey files as a user has them: MMU shards (no corpus layout), text tables, a broken file."""
    folder = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(3)
    for survey in ("sdss", "gaia_xp", "spex"):
        spectra = [synthetic_spectrum(survey, kind, origin, i, rng) for i, (kind, origin) in enumerate(MIX[survey])]
        write_mmu_shard(folder / "shards" / f"{survey}.hdf5", spectra)
    wave = np.linspace(4000, 9000, 800)
    for i in range(N_CSV):
        flux = 1 + 0.2 * np.sin(wave / (60 + 10 * i)) + 0.01 * rng.normal(size=wave.size)
        text = "wavelength,flux,ivar\n" + "".join(f"{w:.3f},{f:.5f},400\n" for w, f in zip(wave, flux))
        (folder / "tables" / f"star{i}.csv").parent.mkdir(exist_ok=True)
        (folder / "tables" / f"star{i}.csv").write_text(text)
    (folder / "tables" / "broken.fits").write_bytes(b"SIMPLE  =  this is not FITS" + bytes(100))
    return folder


N_FILES = len(MIX["sdss"]) + len(MIX["gaia_xp"]) + len(MIX["spex"]) + N_CSV


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None,
                                       env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    client = distributed.Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


def test_a_folder_of_files_builds_in_parts_and_lists_what_it_cannot_read(files_dir, tok, tmp_path):
    index = SpectrumIndex.build(files_dir, tmp_path / "idx", tok, progress=False, umap=False,
                                display="source")
    manifest = index.manifest
    assert len(index) == N_FILES and manifest["display"] == "source"
    listed = {entry["source"]: entry["reason"] for entry in manifest["unreadable"]["listed"]}
    assert any(name.endswith("broken.fits") for name in listed) and manifest["unreadable"]["count"] >= 1
    meta = index.metadata
    assert meta["source"].str.endswith(".hdf5").sum() == N_FILES - N_CSV
    # A neighbour is read again from its source (shard + row, or the file) ...
    row = int(np.flatnonzero(meta["object_id"].astype(str) == "gaia_xp-star-3")[0])
    again = index.spectrum(row)
    assert again.meta["from_source"] and again.survey == "gaia_xp" and len(again) == 343
    assert index.search(tok.embed([again]), k=1)["row"].iloc[0] == row
    csv_row = int(np.flatnonzero(meta["source"].str.endswith("star2.csv"))[0])
    assert index.spectrum(csv_row).meta["from_source"]
    # ... and when the source is gone, its thumbnail stands in.
    (files_dir / "tables" / "star2.csv").rename(tmp_path / "moved.csv")
    try:
        thumb = index.spectrum(csv_row)
    finally:
        (tmp_path / "moved.csv").rename(files_dir / "tables" / "star2.csv")
    assert thumb.meta["thumbnail"] and len(thumb) == 64 and 4000 <= thumb.wave[0] < thumb.wave[-1] <= 9000
    assert 0.5 < np.median(thumb.flux) < 1.5
    # Filters run on Parquet with pushed-down predicates, without loading the metadata.
    lazy = SpectrumIndex.load(tmp_path / "idx", tokenizer=tok)
    hits = lazy.search(lazy.embedding(0), k=3, where={"survey": "SDSS", "class": ["qso", "galaxy"]})
    assert "_metadata" not in lazy.__dict__ and len(hits) == 3
    assert set(hits["survey"]) == {"sdss"} and set(hits["class"]) <= {"QSO", "GALAXY"}
    assert lazy.search(lazy.embedding(0), k=50, where={"teff": (3000, None)})["teff"].ge(3000).all()


def test_globs_and_missing_sources(files_dir, tok, tmp_path):
    index = SpectrumIndex.build([str(files_dir / "tables" / "*.csv"), str(files_dir / "nothing" / "*.fits")],
                                tmp_path / "idx", tok, progress=False, umap=False)
    assert len(index) == N_CSV and index.manifest["display"] == "copies"
    assert index.manifest["unreadable"]["listed"][0]["reason"] == "matched no file"
    with pytest.raises(SpectrumError, match="does not exist"):
        SpectrumIndex.build(tmp_path / "nowhere", tmp_path / "x", tok, progress=False)


def test_an_interrupted_build_of_files_resumes(files_dir, tok, tmp_path, monkeypatch):
    monkeypatch.setattr(index_build, "CHUNK_SIZE", 4)  # shard rows per part
    embed_chunk, calls = index_build._embed_chunk, []

    def crash_on_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return embed_chunk(*args, **kwargs)

    monkeypatch.setattr(index_build, "_embed_chunk", crash_on_fourth)
    with pytest.raises(RuntimeError, match="simulated crash"):
        SpectrumIndex.build(files_dir, tmp_path / "idx", tok, progress=False, umap=False)
    parts = sorted((tmp_path / ".idx.building" / "chunks").glob("chunk-*.npz"))
    assert len(parts) == 3
    calls.clear()
    monkeypatch.setattr(index_build, "_embed_chunk", lambda *a, **k: (calls.append(1), embed_chunk(*a, **k))[1])
    index = SpectrumIndex.build(files_dir, tmp_path / "idx", tok, progress=False, umap=False)
    n_units = -(-len(MIX["sdss"]) // 4) + -(-len(MIX["gaia_xp"]) // 4) + -(-len(MIX["spex"]) // 4) + 1
    assert len(calls) == n_units - 3 and len(index) == N_FILES
    assert index.metadata["object_id"].dropna().astype(str).is_unique


def _same_embeddings(a, b):
    key_a = a.metadata["object_id"].astype(str) + "|" + a.metadata.get("source", pd.Series([""] * len(a))).astype(str)
    key_b = b.metadata["object_id"].astype(str) + "|" + b.metadata.get("source", pd.Series([""] * len(b))).astype(str)
    assert list(key_a) == list(key_b)
    return np.max(np.abs(np.asarray(a._embeddings, np.float32) - np.asarray(b._embeddings, np.float32)))


def test_dask_equals_in_process_on_a_corpus_and_a_folder(cluster, corpus_dir, files_dir, model_dir, tok, tmp_path):
    address = cluster[0].scheduler_address
    for name, source in (("corpus", corpus_dir), ("files", files_dir)):
        local = SpectrumIndex.build(source, tmp_path / f"{name}-local", tok, progress=False, umap=False)
        remote = SpectrumIndex.build(source, tmp_path / f"{name}-dask", model_dir, progress=False,
                                     umap=False, scheduler=address)
        assert len(remote) == len(local) and remote.manifest["build"]["scheduler"] == "address"
        assert _same_embeddings(local, remote) <= 1e-5
    assert len(SpectrumIndex.load(tmp_path / "corpus-dask", tokenizer=tok)) == N_SPECTRA


def test_a_killed_worker_loses_no_finished_part(cluster, corpus_dir, model_dir, tok, tmp_path, monkeypatch):
    _, client = cluster
    monkeypatch.setattr(index_build, "CHUNK_SIZE", 1)  # 44 parts
    out, chunks = tmp_path / "idx", tmp_path / ".idx.building" / "chunks"
    result, killed = {}, []

    def run():
        try:
            result["index"] = SpectrumIndex.build(corpus_dir, out, model_dir, progress=False, umap=False,
                                                  scheduler=cluster[0].scheduler_address)
        except BaseException as err:  # noqa: BLE001 - reported below
            result["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 40
    while time.time() < deadline and thread.is_alive() and not list(chunks.glob("chunk-*.npz")):
        time.sleep(0.05)
    if thread.is_alive():
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
    thread.join(60)
    assert "error" not in result, result.get("error")
    assert killed, "the build finished before a worker could be killed"
    index = result["index"]
    ids = index.metadata["object_id"].astype(str)
    assert len(index) == N_SPECTRA and ids.is_unique  # each input spectrum exactly once
    local = SpectrumIndex.build(corpus_dir, tmp_path / "local", tok, progress=False, umap=False)
    assert _same_embeddings(local, index) <= 1e-5


def test_ivf_pq_reaches_the_recall_it_records_on_50k_vectors(monkeypatch):
    monkeypatch.setattr(index_build, "TRAIN_SAMPLE", 12_800)
    rng = np.random.default_rng(0)
    n, d = 50_000, 128
    centres = rng.normal(size=(500, d))
    x = centres[rng.integers(500, size=n)] + 0.6 * rng.normal(size=(n, d))
    stored = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    index, params = index_build._build_faiss(stored, "IVF128,PQ16np", rerank=8)
    assert params["recall_at_10"] >= 0.95 and params["nprobe"] >= 1
    # Recall on 1,000 other indexed vectors, their own match left out, as the build measures it.
    ids = np.sort(rng.choice(n, 1000, replace=False))
    queries = stored[ids].astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, truth = exact_knn(queries, stored, 11)
    _, found = rerank_search(index, stored, queries, 11, params.get("rerank", 8))
    recall = np.mean([len(set(t[t != i][:10]) & set(f[f != i][:10])) / 10 for t, f, i in zip(truth, found, ids)])
    assert recall >= 0.95
    assert index_build.ivf_factory(10_000_000, 128) == "IVF16384,PQ32np"


def test_a_partition_that_keeps_failing_stops_the_build_with_its_reason(cluster, model_dir, tok, tmp_path):
    from spectok_core.index_cluster import run_parts

    bad = {"kind": "nonsense"}  # read_unit refuses it on the worker, every time
    with pytest.raises(SpectrumError, match=r"failed 2 times on the cluster .*unknown unit kind.*resume"):
        run_parts([(bad, tmp_path / "chunk-00000.npz")], "dask", None, model_dir, tok.weights_hash, 8,
                  "copies", None, client=cluster[1], retries=1)
    assert not list(tmp_path.glob("*.npz"))


def test_cli_builds_from_files_and_searches_a_source_index(files_dir, model_dir, tmp_path, capsys):
    from spectok_core.cli import main

    out = tmp_path / "idx"
    assert main(["index", "build", str(files_dir / "shards"), str(files_dir / "tables" / "*.csv"), "--out",
                 str(out), "--model", str(model_dir), "--no-umap", "--display", "source"]) == 0
    assert "display source" in capsys.readouterr().out
    query = files_dir / "shards" / "sdss.hdf5"
    assert main(["search", str(query), "--which", "0", "-k", "2", "--index", str(out), "--model",
                 str(model_dir), "--survey", "sdss"]) == 0
    assert "sdss-star-0" in capsys.readouterr().out


def test_an_ivf_pq_index_without_display_copies_searches_reranks_and_memory_maps(corpus_dir, tok, tmp_path,
                                                                                 monkeypatch):
    from spectok_core import index as index_module

    built = SpectrumIndex.build(corpus_dir, tmp_path / "ivf", tok, factory="IVF2,PQ8x4np", display="source",
                                progress=False, umap=False)
    params = built.manifest["search_params"]
    assert params["rerank"] >= 8 and params["nprobe"] >= 1 and built.manifest["display"] == "source"
    monkeypatch.setattr(index_module, "MMAP_ABOVE", 0)  # as if index.faiss were too large for memory
    index = SpectrumIndex.load(tmp_path / "ivf", tokenizer=tok)
    hits = index.search(np.stack([index.embedding(r) for r in range(len(index))]), k=3)
    own = hits.groupby("query")["row"].apply(list)
    # 4-bit PQ on 44 near-identical toy embeddings: re-ranking is exact, the candidates are not.
    assert np.mean([q in rows for q, rows in own.items()]) >= 0.9
    assert np.allclose(hits["similarity"][hits["row"] == hits["query"]], 1.0, atol=1e-5)
    for fraction in (0.0, 1.0):  # the FAISS selector path with re-ranking, then the exact subset
        monkeypatch.setattr(index_module, "SUBSET_FRACTION", fraction)
        found = index.search(index.embedding(3), k=4, where={"class": "STAR", "teff": (3000, None)})
        assert len(found) == 4 and set(found["class"]) == {"STAR"} and (found["teff"] >= 3000).all()
    from spectok_core.index import select_rows

    for where in ({"class": "star", "teff": (3000, None)}, {"z": (None, 1.0)}, {"survey": ["miles", "spex"]},
                  {"object_id": "desi-qso-9"}, {"origin": [None, "real"]}):
        pushed = SpectrumIndex.load(tmp_path / "ivf", tokenizer=False).select(where)
        assert np.array_equal(pushed, select_rows(index.metadata, where)), where
    spectrum = index.spectrum(5)
    assert spectrum.meta["from_source"] and spectrum.meta["index_row"] == 5


def test_a_large_index_answers_the_apps_lookups_from_parquet(tok, tmp_path, monkeypatch):
    """Without its metadata in memory, an index finds ids and positions (RA wrap and pole
    included), counts its contents and picks at random as the in-memory code does."""
    from spectok_core import explore
    from spectok_core.io.mmu import write_mmu_shard
    from tests.fake_spectra import labelled_spectrum
    from tests.index_corpus import GRIDS

    rng = np.random.default_rng(5)
    sky = [(359.9995, 10.0), (0.0004, 10.0), (180.0, 89.9999), (0.0, 89.9998), (150.1, 2.2),
           (150.1003, 2.2), (20.0, -45.0), (300.0, 60.0)]
    spectra = [labelled_spectrum(GRIDS["sdss"], "sdss", "GALAXY" if i % 2 else "STAR",
                                 {"object_id": f"obj-{i}", "origin": "real", "split": "test", "ra": ra, "dec": dec},
                                 rng) for i, (ra, dec) in enumerate(sky)]
    spectra[5].meta["origin"] = spectra[6].meta["origin"] = "simulated"
    spectra[7].meta["class"] = None  # counted as "unknown"
    write_mmu_shard(tmp_path / "corpus" / "real" / "sdss" / "sdss-0.h5", spectra)
    from spectok_core import index_build

    # Row groups of 3 rows (a large build writes 8,192): reads must cross them.
    monkeypatch.setattr(index_build, "ROW_GROUP", 3)
    SpectrumIndex.build(tmp_path / "corpus", tmp_path / "idx", tok, display="source", progress=False, umap=False)
    large = SpectrumIndex.load(tmp_path / "idx", tokenizer=tok)
    loaded = SpectrumIndex.load(tmp_path / "idx", tokenizer=tok)
    meta = loaded.metadata  # read whole: the in-memory answers to compare with
    assert not large.metadata_loaded and loaded.metadata_loaded
    assert large._parquet.metadata.num_row_groups == 3
    for rows in ([7, 0, 4], [2, 3], [5], []):
        pd.testing.assert_frame_equal(large.rows_metadata(rows).reset_index(drop=True),
                                      meta.iloc[rows].reset_index(drop=True), check_categorical=False)
    with pytest.raises(SpectrumError, match="rows must be"):
        large.rows_metadata([8])
    sample = large.sample_rows(4)  # from whole row groups of 3: two groups read, not three
    groups = set(np.searchsorted(large._group_starts, sample, side="right") - 1)
    assert len(sample) == 4 and len(groups) == 2 and np.array_equal(sample, large.sample_rows(4))
    assert np.array_equal(loaded.sample_rows(4), explore.map_sample(8, limit=4))  # in memory: any rows
    assert np.array_equal(large.sample_rows(100), np.arange(8))
    for text in ("obj-3", "359.9999 10.0", "0 10", "12:00:00 +89:59:59.8", "150.1 2.2", "10:00:24 +02:12:00",
                 "OBJ-3", "20 45", "not-a-thing"):
        got, want = explore.lookup_in(large, text), explore.lookup(meta, text)
        assert got.rows == want.rows and got.kind == want.kind, text
    assert explore.lookup_in(large, "359.9999 10.0").rows == [0, 1]  # across RA = 0
    assert sorted(explore.lookup_in(large, "0 89.99985").rows) == [2, 3]  # at the pole every RA is near
    assert explore.lookup_in(large, "obj-3").kind == "id" and not explore.lookup_in(large, "OBJ-3").rows
    assert "survey_class" in large.manifest["counts"]  # the build counted what the Home table shows
    pd.testing.assert_frame_equal(explore.index_contents_of(large), explore.index_contents(meta))
    del large.manifest["counts"]["survey_class"]  # an older build: counted in Parquet instead
    pd.testing.assert_frame_equal(explore.index_contents_of(large), explore.index_contents(meta))
    assert explore.index_values(large, "class") == ["GALAXY", "STAR"]
    snr = meta["snr"].to_numpy()
    bright = {explore.random_row_of(large, np.random.default_rng(s), bright=True) for s in range(20)}
    assert bright <= set(np.flatnonzero(snr >= np.quantile(snr, 0.9)))
    assert not large.metadata_loaded  # none of it needed the whole table
