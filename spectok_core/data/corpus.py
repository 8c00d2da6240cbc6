"""The multi-survey corpus: real spectra plus simulated observations, as HDF5 shards.

Layout (every shard in the Multimodal Universe field layout, see :mod:`spectok_core.io.mmu`)::

    CORPUS/manifest.json                      format version, settings, counts, hashes
    CORPUS/real/<collection>/<collection>-NNN.h5
    CORPUS/sim/<survey>/<survey>-cNNNNN.h5    one file per simulation chunk and survey
    CORPUS/sim/.done/cNNNNN.json              a finished chunk (the build resumes after it)
    CORPUS/user/<name>.h5                     spectra added with `spectok corpus add`

Splits are assigned by object, from a hash of the object id, so no object sits
in two splits; a simulated star built from a real library star inherits that
star's split, so no real test star leaks into training through its simulation.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io.mmu import write_mmu_shard
from ..spectrum import Spectrum, SpectrumError
from .collections import COLLECTIONS, SURVEY_COLLECTIONS, load_collection
from .fetch import cache_dir

FORMAT_VERSION = 1
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
REAL_SHARD_SIZE = 5000

OPTICAL_STAR_SURVEYS = ("sdss", "boss", "desi", "lamost_lrs", "lamost_mrs", "gaia_xp")
GALAXY_SURVEYS = ("sdss", "boss", "desi", "lamost_lrs")
QSO_SURVEYS = ("sdss", "boss", "desi", "lamost_lrs", "gaia_xp")


def split_of(object_id: str) -> str:
    """Deterministic train/val/test split from the object id (80/10/10)."""
    digest = hashlib.sha1(str(object_id).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if u < edge:
            return name
    return SPLITS[-1][0]


@dataclass(frozen=True)
class CorpusConfig:
    n_simulated: int = 100_000  # simulated observations (spectra), not sources
    chunk_size: int = 500  # observations per simulation chunk (one resumable unit)
    seed: int = 0
    workers: int = 2
    real_limit: int | None = None  # per collection; None = every real spectrum
    collections: tuple[str, ...] = tuple(COLLECTIONS)
    # Source mix and how many instruments see each source.
    mix: tuple[tuple[str, float], ...] = (("star", 0.40), ("apogee", 0.10), ("galaxy", 0.30), ("qso", 0.20))
    n_instruments: tuple[float, float, float] = (0.4, 0.4, 0.2)  # P(1), P(2), P(3)
    min_coverage: float = 0.85  # share of an instrument's range a source must cover
    # H-band twins: the share of labelled library stars that also get an APOGEE spectrum
    # (same labels, same velocity), and the share of an optical instrument's range such a
    # star must cover. MILES (3,540-7,410 A) covers 0.68 of SDSS's range and 0.61 of DESI's:
    # at 0.85 only STELIB's ~200 labelled stars reach the wide surveys (30-50 train pairs
    # each), at 0.6 the 945 MILES stars do too, their uncovered pixels masked as no data.
    twin_share: float = 0.25
    twin_min_coverage: float = 0.85

    @classmethod
    def small(cls, **overrides) -> CorpusConfig:
        """A few thousand spectra in seconds, for tests and quick looks."""
        return cls(**{"n_simulated": 1500, "chunk_size": 250, "real_limit": 300, **overrides})


@dataclass
class Templates:
    """Everything a simulation worker needs, loaded once per process."""

    stars: list  # SimSource of real library stars at rest
    apogee_labels: np.ndarray  # (n, 4) Teff, logg, [Fe/H], [α/M] of real APOGEE stars
    apogee_ids: list[str]  # their object ids (Gaia XP spectra of the same stars)
    cache: Path
    extra: dict = field(default_factory=dict)


_TEMPLATES: Templates | None = None  # per worker process


def load_templates(cache: Path, real: dict[str, list[Spectrum]]) -> Templates:
    from .astro import stars_from_library

    stars = []
    for key in ("miles", "stelib", "mastar"):
        for spectrum in real.get(key, []):
            for star in stars_from_library([spectrum], np.random.default_rng(0), rv_sigma_kms=0.0):
                star.meta["template_id"] = str(spectrum.meta["object_id"])
                stars.append(star)
    labelled = [
        s for s in real.get("gaia_xp", [])
        if all(s.meta.get(k) is not None for k in ("teff", "logg", "feh", "alpha_m"))
    ]
    labels = np.array([[s.meta[k] for k in ("teff", "logg", "feh", "alpha_m")] for s in labelled], float)
    ids = [str(s.meta["object_id"]) for s in labelled]
    return Templates(stars, labels.reshape(-1, 4), ids, cache)


def _coverage(source, survey: str) -> float:
    from .. import surveys

    s = surveys.get(survey)
    lo, hi = source.wave_observed[0], source.wave_observed[-1]
    inside = max(0.0, min(hi, s.wave_max) - max(lo, s.wave_min))
    return inside / (s.wave_max - s.wave_min)


def _with(source, object_id: str, z: float, meta: dict):
    from .simulate import SimSource

    return SimSource(object_id, source.wave_rest, source.flux, source.fwhm_rest, z, {**source.meta, **meta})


def _sources(rng: np.random.Generator, cfg: CorpusConfig, templates: Templates):
    """An endless stream of (source, candidate instruments, split)."""
    from . import astro

    kinds = [k for k, _ in cfg.mix]
    weights = np.array([w for _, w in cfg.mix], float)
    weights /= weights.sum()
    while True:
        kind = kinds[rng.choice(len(kinds), p=weights)]
        if kind == "star" and templates.stars:
            base = templates.stars[int(rng.integers(len(templates.stars)))]
            number = int(rng.integers(10**9))
            rv = float(rng.normal(0.0, 50.0))
            source = _with(base, f"{base.object_id}-v{number:09d}", rv / 299792.458, {"rv_kms": rv})
            # Inherit the template star's split: no real test star trains through its twin.
            split = split_of(base.meta.get("template_id", base.object_id))
            candidates = list(OPTICAL_STAR_SURVEYS)
            labels = [source.meta.get(k) for k in ("teff", "logg", "feh")]
            if all(v is not None for v in labels) and rng.random() < cfg.twin_share:
                candidates.append("apogee")  # an H-band twin with the same labels
            yield source, candidates, split
        elif kind == "apogee" and len(templates.apogee_labels):
            i = int(rng.integers(len(templates.apogee_labels)))
            teff, logg, feh, alpha = templates.apogee_labels[i]
            try:
                source = astro.apogee_star(float(teff), float(logg), float(feh), float(alpha), rng)
            except ValueError:  # labels outside the H-band model's range (e.g. Teff > 30,000 K)
                continue
            # The same star's real Gaia XP spectrum is in the corpus: share its id and split.
            object_id = templates.apogee_ids[i]
            source = _with(source, object_id, source.z, {"pair_of": "gaia_xp real"})
            yield source, ["apogee"], split_of(object_id)
        elif kind == "galaxy":
            z = float(rng.uniform(0.01, 0.5) if rng.random() < 0.65 else rng.uniform(0.5, 1.5))
            source = astro.galaxy(rng, z, cache=templates.cache)
            yield source, list(GALAXY_SURVEYS), split_of(source.object_id)
        elif kind == "qso":
            z = float(np.clip(rng.lognormal(np.log(1.6), 0.45), 0.1, 4.0))
            source = astro.quasar(rng, z)
            yield source, list(QSO_SURVEYS), split_of(source.object_id)


def _hband_twin(star, rng: np.random.Generator):
    """The H-band model of an optical library star, same object, same labels, same velocity."""
    from . import astro

    meta = star.meta
    twin = astro.apogee_star(
        meta["teff"], meta["logg"], meta["feh"], meta.get("alpha_m") or 0.0, rng,
        rv_kms=meta.get("rv_kms", 0.0), object_id=star.object_id,
    )
    keep = {k: v for k, v in meta.items() if k in ("template", "template_id", "spectral_type")}
    return _with(twin, star.object_id, twin.z, {**keep, "hband_model": True})


def simulate_chunk(chunk: int, cfg: CorpusConfig, templates: Templates) -> dict[str, list[Spectrum]]:
    """``cfg.chunk_size`` observations from the chunk's own seed, grouped by survey."""
    from . import instruments

    rng = np.random.default_rng([cfg.seed, chunk])
    by_survey: dict[str, list[Spectrum]] = {}
    made = 0
    for source, candidates, split in _sources(rng, cfg, templates):
        twinned = "apogee" in candidates and source.wave_rest[-1] < 15000.0
        need = cfg.twin_min_coverage if twinned else cfg.min_coverage
        eligible = [s for s in candidates if s == "apogee" or _coverage(source, s) >= need]
        if not eligible:
            continue
        k = 1 + int(rng.choice(3, p=np.array(cfg.n_instruments) / sum(cfg.n_instruments)))
        chosen = rng.choice(eligible, size=min(k, len(eligible)), replace=False)
        for survey in chosen:
            target = source
            try:
                if survey == "apogee" and twinned:
                    target = _hband_twin(source, rng)
                spectrum = instruments.observe(target, str(survey), rng, object_meta={"split": split})
            except (SpectrumError, ValueError):  # too little coverage, labels out of range
                continue
            by_survey.setdefault(str(survey), []).append(spectrum)
            made += 1
        if made >= cfg.chunk_size:
            return by_survey
    return by_survey  # pragma: no cover - the stream is endless


def _init_worker(templates: Templates) -> None:
    global _TEMPLATES
    _TEMPLATES = templates


def _chunk_job(args) -> tuple[int, dict[str, int]]:
    chunk, cfg, out = args
    by_survey = simulate_chunk(chunk, cfg, _TEMPLATES)
    counts = {}
    for survey, spectra in by_survey.items():
        write_mmu_shard(out / "sim" / survey / f"{survey}-c{chunk:05d}.h5", spectra)
        counts[survey] = len(spectra)
    marker = out / "sim" / ".done" / f"c{chunk:05d}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(counts))
    os.replace(tmp, marker)
    return chunk, counts


def build_real(out: Path, cfg: CorpusConfig, cache: Path, progress: bool = True) -> dict[str, list[Spectrum]]:
    """Read every real collection, assign splits, write its shards (skipped when done)."""
    real: dict[str, list[Spectrum]] = {}
    for key in tqdm(cfg.collections, desc="real collections", disable=not progress):
        try:
            spectra, problems = load_collection(key, cache, limit=cfg.real_limit)
        except SpectrumError as err:
            if key not in SURVEY_COLLECTIONS:
                raise
            # A few survey files from a package not fetched yet: the rest of the corpus does not
            # wait for them; `spectok corpus add-real` adds them later (no DONE marker is written).
            print(f"warning: {err}; the corpus is built without them", flush=True)
            continue
        real[key] = spectra
        write_collection(out, key, spectra, problems)
    return real


def write_collection(out: Path, key: str, spectra: list[Spectrum], problems: Sequence[str] = ()) -> int:
    """Assign splits by object and write one real collection's shards (skipped when done)."""
    for spectrum in spectra:
        spectrum.meta["split"] = split_of(spectrum.meta["object_id"])
    done = Path(out) / "real" / key / "DONE.json"
    if done.is_file() or not spectra:
        return 0
    for index, start in enumerate(range(0, len(spectra), REAL_SHARD_SIZE)):
        write_mmu_shard(Path(out) / "real" / key / f"{key}-{index:03d}.h5", spectra[start : start + REAL_SHARD_SIZE])
    done.write_text(json.dumps({"n": len(spectra), "problems": list(problems)[:50], "n_problems": len(problems)}))
    return len(spectra)


def add_real(out: Path, keys: Sequence[str] | None = None, cache: Path | None = None) -> dict[str, int]:
    """Add real collections (by default the survey files) to a built corpus, without rebuilding.

    Only collections the corpus lacks are read and written (their shards sit where a fresh
    build puts them, split by object with :func:`split_of`); the manifest's collection list,
    counts, hash and sources are brought up to date, so the corpus looks as a fresh build with
    those collections would. Returns ``{key: spectra added}``.
    """
    out = Path(out)
    cache = Path(cache) if cache else cache_dir()
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise SpectrumError(f"{out} holds no corpus manifest; build one with `spectok corpus build`")
    manifest = json.loads(manifest_path.read_text())
    wanted = list(keys) if keys else list(SURVEY_COLLECTIONS)
    unknown = [k for k in wanted if k not in COLLECTIONS]
    if unknown:
        raise SpectrumError(f"unknown collection(s) {unknown}; known: {sorted(COLLECTIONS)}")
    added: dict[str, int] = {}
    for key in wanted:
        if (out / "real" / key / "DONE.json").is_file():
            added[key] = 0
            continue
        spectra, problems = load_collection(key, cache)
        added[key] = write_collection(out, key, spectra, problems)
    config = manifest.setdefault("config", {})
    present = set(config.get("collections", [])) | set(wanted)
    config["collections"] = [k for k in COLLECTIONS if k in present] + sorted(present - set(COLLECTIONS))
    manifest.update(_contents(out, cache))
    _write_manifest(manifest_path, manifest)
    return added


def build(out: Path, cfg: CorpusConfig = CorpusConfig(), cache: Path | None = None, progress: bool = True) -> dict:
    """Build (or resume) the corpus in ``out``; returns the manifest."""
    out = Path(out)
    cache = Path(cache) if cache else cache_dir()
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text())
        if previous.get("config") != _config_dict(cfg):
            raise SpectrumError(
                f"{out} holds a corpus built with other settings; choose another folder or delete it"
            )
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps({"format_version": FORMAT_VERSION, "config": _config_dict(cfg),
                                         "complete": False}, indent=1))
    start = time.time()
    real = build_real(out, cfg, cache, progress)
    templates = load_templates(cache, real)
    del real
    n_chunks = -(-cfg.n_simulated // cfg.chunk_size)
    todo = [c for c in range(n_chunks) if not (out / "sim" / ".done" / f"c{c:05d}.json").is_file()]
    jobs = [(c, cfg, out) for c in todo]
    bar = tqdm(total=n_chunks * cfg.chunk_size, initial=(n_chunks - len(todo)) * cfg.chunk_size,
               desc="simulated observations", unit="spectra", disable=not progress)
    if cfg.workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(cfg.workers, initializer=_init_worker, initargs=(templates,)) as pool:
            for _, counts in pool.imap_unordered(_chunk_job, jobs):
                bar.update(sum(counts.values()))
    else:
        _init_worker(templates)
        for job in jobs:
            _, counts = _chunk_job(job)
            bar.update(sum(counts.values()))
    bar.close()
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": _config_dict(cfg),
        "complete": True,
        "build_seconds": round(time.time() - start, 1),
        **_contents(out, cache),
    }
    _write_manifest(manifest_path, manifest)
    return manifest


def _contents(out: Path, cache: Path) -> dict:
    """The manifest's record of what a corpus folder holds: counts, hash, data sources."""
    table = metadata(out, ("survey", "origin"))
    return {
        "n_spectra": int(len(table)),
        "counts": {k: int(v) for k, v in Counter(f"{s}|{o}" for s, o in zip(table["survey"], table["origin"])).items()},
        "corpus_hash": corpus_hash(out),
        "sources": _source_records(cache),
    }


def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)


def _config_dict(cfg: CorpusConfig) -> dict:
    """The settings that define the corpus (the number of workers does not)."""
    settings = json.loads(json.dumps(asdict(cfg)))
    settings.pop("workers")
    # Settings added later are recorded only when changed, so earlier builds still resume.
    for key in ("twin_share", "twin_min_coverage"):
        if settings[key] == CorpusConfig.__dataclass_fields__[key].default:
            settings.pop(key)
    return settings


def _source_records(cache: Path) -> list[dict]:
    from .fetch import source_records

    return source_records(cache)


def shard_paths(corpus: Path) -> list[Path]:
    return sorted(p for p in Path(corpus).rglob("*.h5") if not p.name.startswith("."))


def corpus_hash(corpus: Path) -> str:
    """A hash over shard names and sizes (cheap; shards are written atomically)."""
    digest = hashlib.sha256()
    for path in shard_paths(corpus):
        digest.update(f"{path.relative_to(corpus)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


COLUMNS = ("object_id", "survey", "origin", "class", "split", "z", "teff", "logg", "feh", "spectral_type")


def metadata(corpus: Path, columns: Sequence[str] = COLUMNS):
    """One row per spectrum with the metadata columns, plus its shard and row (pandas)."""
    import h5py
    import pandas as pd

    frames = []
    for path in shard_paths(corpus):
        with h5py.File(path, "r") as h5:
            n = h5["spectrum_flux"].shape[0]
            data = {"shard": [str(path.relative_to(corpus))] * n, "row": np.arange(n)}
            for name in columns:
                if name in h5:
                    values = h5[name][:]
                    data[name] = values.astype(str) if values.dtype.kind in "OSU" else values
                else:
                    data[name] = [None] * n
            frames.append(pd.DataFrame(data))
    if not frames:
        raise SpectrumError(f"{corpus}: no shards; build a corpus with `spectok corpus build`")
    table = pd.concat(frames, ignore_index=True)
    for name in ("class", "origin", "split", "survey", "spectral_type", "object_id"):
        if name in table:
            table[name] = table[name].replace({"": None, "None": None})
    return table


def info(corpus: Path):
    """Counts by survey × class × origin × split (pandas DataFrame)."""
    table = metadata(corpus, ("survey", "class", "origin", "split"))
    table["class"] = table["class"].fillna("-")
    counts = table.groupby(["survey", "class", "origin", "split"]).size().unstack("split", fill_value=0)
    counts["total"] = counts.sum(axis=1)
    return counts


def add(corpus: Path, paths: Sequence[str | os.PathLike], name: str | None = None) -> tuple[Path, list[str]]:
    """Add a user's files (any readable format, or real MMU shards) to the corpus."""
    from ..io import read_spectra

    spectra: list[Spectrum] = []
    problems: list[str] = []
    for path in paths:
        try:
            got = read_spectra(path)
        except SpectrumError as err:
            problems.append(str(err))
            continue
        problems.extend(got.problems)
        spectra.extend(got)
    if not spectra:
        raise SpectrumError("nothing to add: " + "; ".join(problems))
    for spectrum in spectra:
        spectrum.meta.setdefault("origin", "user")
        spectrum.meta.setdefault("object_id", f"user-{spectrum.meta.get('source_file')}-{spectrum.meta.get('index_in_file', 0)}")
        spectrum.meta["split"] = split_of(spectrum.meta["object_id"])
    name = name or time.strftime("user-%Y%m%d-%H%M%S")
    # Spectra of one survey share a shard so their padding stays small.
    written = []
    for survey in sorted({s.survey for s in spectra}):
        group = [s for s in spectra if s.survey == survey]
        written.append(write_mmu_shard(Path(corpus) / "user" / f"{name}-{survey}.h5", group))
    return written[0].parent, problems
