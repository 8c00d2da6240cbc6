"""Where indexed spectra come from, read in bounded pieces: a corpus folder, MMU shards, survey files.

A build is planned as *units* (partitions): small picklable dicts, each naming a few
hundred spectra at most, so that one unit is read, embedded and written as one part
with bounded memory, on this process or on a Dask worker.

* ``corpus``: rows of a corpus folder's shards (``spectok corpus build``); the plan
  table (metadata of every selected row) is made once, from the shards' catalogue
  columns.
* ``shard``: a row range ``[start, stop)`` of a Multimodal Universe HDF5 shard,
  read with slices (a shard may hold millions of rows).
* ``files``: a few survey files, each read whole through :func:`spectok_core.read_spectra`
  (one file holds one spectrum, or a few hundred fibres).

Every unit is read by :func:`read_unit`, which never raises for bad input: what
cannot be read is returned as ``(source, reason)`` errors, and the manifest lists them.
The same readers show a neighbour from its source in an index built without
display copies (:func:`read_source_row`).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .index_format import METADATA_COLUMNS, NUMERIC_COLUMNS, THUMB_PIXELS
from .spectrum import Spectrum, SpectrumError

SHARD_SUFFIXES = (".h5", ".hdf5")
FILES_PER_UNIT = 64  # survey files per unit (a file holds one spectrum or a few hundred)
INT_COLUMNS = ("shard_row", "source_row")


def _h5_checked(path: Path):
    """An open h5py File after the hostile-input checks (no links, external or virtual data)."""
    import h5py

    from .io.guard import check_hdf5
    from .io.source import Limits

    h5 = h5py.File(path, "r")
    try:
        # Structure only: a shard may be far larger than an upload, and is read in slices.
        check_hdf5(h5, Limits(max_bytes=2**50), str(path))
    except BaseException:
        h5.close()
        raise
    return h5


def is_corpus(path: Path) -> bool:
    """A corpus folder (``spectok corpus build``): MMU shards under real/ or sim/."""
    return path.is_dir() and any(
        (path / part).is_dir() and any((path / part).rglob("*.h5")) for part in ("real", "sim"))


def _is_shard(path: Path) -> int | None:
    """Rows of an MMU shard that can be read in slices; None when it is no such shard."""
    if path.suffix.lower() not in SHARD_SUFFIXES:
        return None
    try:
        with _h5_checked(path) as h5:
            if "spectrum_flux" in h5 and "spectrum_lambda" in h5 and h5["spectrum_flux"].ndim == 2 \
                    and h5["spectrum_lambda"].shape == h5["spectrum_flux"].shape:
                return int(h5["spectrum_flux"].shape[0])
    except (OSError, SpectrumError, KeyError, ValueError, RuntimeError):
        return None
    return None


def expand(sources: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by folders, globs and paths (sorted, each once); and what matched nothing."""
    files: dict[str, Path] = {}
    missing: list[tuple[str, str]] = []
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.is_file()
                     and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        elif path.is_file():
            found = [path]
        elif glob.has_magic(text):
            found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
        else:
            missing.append((text, "no such file or folder"))
            continue
        if not found:
            missing.append((text, "matched no file"))
        for p in found:
            files.setdefault(str(p.resolve()), p.resolve())
    return [files[k] for k in sorted(files)], missing


def file_units(sources: Sequence[str | os.PathLike], chunk: int) -> tuple[list[dict], list[tuple[str, str]], str]:
    """Units for survey files and MMU shards; errors for sources that name nothing; a plan digest."""
    files, errors = expand(sources)
    units: list[dict] = []
    loose: list[str] = []
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        rows = _is_shard(path)
        if rows is None:
            loose.append(str(path))
            continue
        for start in range(0, rows, chunk):
            units.append({"kind": "shard", "path": str(path), "start": start, "stop": min(rows, start + chunk)})
    for start in range(0, len(loose), FILES_PER_UNIT):
        units.append({"kind": "files", "paths": loose[start : start + FILES_PER_UNIT]})
    return units, errors, digest.hexdigest()


def corpus_units(corpus: Path, plan, chunk: int) -> list[dict]:
    """Units of CHUNK rows of a corpus plan table (metadata travels with each unit)."""
    units = []
    columns = [c for c in plan.columns]
    for start in range(0, len(plan), chunk):
        part = plan.iloc[start : start + chunk]
        meta = {name: _plain_column(part[name]) for name in columns}
        units.append({"kind": "corpus", "corpus": str(corpus), "meta": meta})
    return units


def _plain_column(series) -> list:
    values = series.astype(object).where(series.notna(), None).tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def unit_size(unit: dict) -> int:
    """Spectra the unit names at most (a survey file counts one)."""
    if unit["kind"] == "corpus":
        return len(unit["meta"]["shard"])
    if unit["kind"] == "shard":
        return unit["stop"] - unit["start"]
    return len(unit["paths"])


# -- reading ----------------------------------------------------------------------------------------


def read_rows(path: Path, rows: np.ndarray, surveys: Sequence[str | None] | None = None) -> list:
    """Spectra of some rows of one MMU shard (None for a row that is not a valid spectrum).

    ``surveys``: the survey key of each row (None: the shard's ``survey`` attribute).
    """
    from .io import mmu
    from .spectrum import sigma_to_ivar
    from .surveys import SURVEYS

    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows)
    wanted = rows[order]
    lo, hi = int(wanted[0]), int(wanted[-1]) + 1
    # A dense run is one contiguous read; scattered rows use h5py's point selection.
    dense = hi - lo <= 2 * len(wanted)

    def take(dataset) -> np.ndarray:
        return dataset[lo:hi][wanted - lo] if dense else dataset[wanted]

    with _h5_checked(path) as h5:
        if h5["spectrum_flux"].shape[-1] > 2_000_000:
            raise SpectrumError(f"{path}: rows of {h5['spectrum_flux'].shape[-1]:,} pixels, over the limit")
        wave = take(h5["spectrum_lambda"]).astype(np.float64) * mmu._wave_factor(h5)
        flux = take(h5["spectrum_flux"]).astype(np.float64)
        ivar_name, sigma_name = mmu._first(h5, mmu.IVAR_NAMES), mmu._first(h5, mmu.SIGMA_NAMES)
        if ivar_name:
            ivar = take(h5[ivar_name]).astype(np.float64)
        elif sigma_name:
            ivar = sigma_to_ivar(take(h5[sigma_name]))
        else:
            ivar = np.ones_like(flux)
        if "spectrum_mask" in h5:
            mask = take(h5["spectrum_mask"]) != 0
        elif "spectrum_bitmask" in h5:
            mask = (take(h5["spectrum_bitmask"]).astype(np.int64) & mmu.APOGEE_BAD_BITS) != 0
        else:
            mask = np.zeros(flux.shape, bool)
        default_survey = str(mmu.plain(h5.attrs.get("survey", "unknown")) or "unknown")
    out: list[Spectrum | None] = [None] * len(rows)
    for i, j in enumerate(order):
        survey = surveys[j] if surveys is not None and surveys[j] in SURVEYS else default_survey
        try:
            parts = mmu._unpad(wave[i], flux[i], ivar[i], mask[i])  # drop the shard's padding
            out[j] = Spectrum(*parts, survey=survey if survey in SURVEYS else "unknown")
        except SpectrumError:
            pass
    return out


def _shard_meta(path: Path, start: int, stop: int) -> list[dict]:
    """Catalogue metadata of rows [start, stop) of an MMU shard, as read_spectra gives it."""
    from .io import mmu

    with _h5_checked(path) as h5:
        n = h5["spectrum_flux"].shape[0]
        columns = {}
        for name in h5:
            item = h5[name]
            if name.startswith(mmu.SPECTRUM_PREFIX) or not hasattr(item, "shape") or item.shape != (n,):
                continue
            columns[name] = (np.atleast_1d(item[start:stop]), mmu.plain(item.attrs.get("kind", None)))
        ours = mmu.plain(h5.attrs.get("writer", None)) == mmu.WRITER
        survey = str(mmu.plain(h5.attrs.get("survey", "")) or "")
    out = []
    for row in range(stop - start):
        meta = mmu._row_meta(columns, row, ours)
        if "survey" in columns:
            meta["survey"] = mmu.plain(columns["survey"][0][row])
        elif survey:
            meta["survey"] = survey
        out.append(meta)
    return out


def read_unit(unit: dict) -> tuple[list[Spectrum], list[dict], list[tuple[str, str]]]:
    """The unit's spectra, a metadata record for each, and (source, reason) for what failed."""
    kind = unit["kind"]
    spectra: list[Spectrum] = []
    records: list[dict] = []
    errors: list[tuple[str, str]] = []
    if kind == "corpus":
        corpus, meta = Path(unit["corpus"]), unit["meta"]
        shards = np.asarray(meta["shard"], dtype=object)
        for shard in dict.fromkeys(shards.tolist()):
            at = np.flatnonzero(shards == shard)
            rows = np.asarray(meta["shard_row"], np.int64)[at]
            surveys = [meta["survey"][i] or "unknown" for i in at]
            try:
                got = read_rows(corpus / shard, rows, surveys)
            except (OSError, SpectrumError, KeyError, ValueError, RuntimeError) as err:
                errors.append((str(shard), _reason(err)))
                continue
            for i, spectrum in zip(at, got):
                if spectrum is None:
                    errors.append((f"{shard}:{meta['shard_row'][i]}", "not a valid spectrum"))
                    continue
                spectra.append(spectrum)
                records.append({name: values[i] for name, values in meta.items()})
    elif kind == "shard":
        path, start, stop = Path(unit["path"]), unit["start"], unit["stop"]
        try:
            metas = _shard_meta(path, start, stop)
            got = read_rows(path, np.arange(start, stop), [m.get("survey") for m in metas])
        except (OSError, SpectrumError, KeyError, ValueError, RuntimeError) as err:
            return [], [], [(f"{path}[{start}:{stop}]", _reason(err))]
        for row, (meta, spectrum) in enumerate(zip(metas, got), start):
            if spectrum is None:
                errors.append((f"{path}:{row}", "not a valid spectrum"))
                continue
            spectra.append(spectrum)
            records.append({**_keep(meta), "survey": spectrum.survey, "source": str(path), "source_row": row})
    elif kind == "files":
        from .io import read_spectra

        for name in unit["paths"]:
            try:
                got = read_spectra(name)
            except Exception as err:  # noqa: BLE001 - any failure of one file is that file's reason
                errors.append((name, _reason(err)))
                continue
            errors.extend((name, problem) for problem in getattr(got, "problems", [])[:20])
            for row, spectrum in enumerate(got):
                spectra.append(spectrum)
                records.append({**_keep(spectrum.meta), "survey": spectrum.survey, "source": name,
                                "source_row": row})
    else:
        raise SpectrumError(f"unknown unit kind {kind!r}")
    return spectra, records, errors


def _keep(meta: dict) -> dict:
    return {k: meta[k] for k in METADATA_COLUMNS if k in meta and meta[k] is not None}


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:300]}" if not isinstance(err, SpectrumError) else text[:300]


def read_source_row(record: dict, corpus: str | None, roots: Sequence[str]) -> Spectrum | None:
    """An indexed spectrum read again from its source, or None when that is not reachable.

    ``record``: the spectrum's metadata (``shard``/``shard_row`` in ``corpus``, or
    ``source``/``source_row``). A source is only read inside ``corpus`` or one of
    ``roots`` (the folders the build read), whatever the metadata says.
    """
    try:
        if record.get("shard") is not None and corpus:
            base = Path(corpus).resolve()
            path = (base / str(record["shard"])).resolve()
            if base not in path.parents or not path.is_file():
                return None
            row = int(record["shard_row"])
            got = read_rows(path, np.array([row]), [record.get("survey")])[0]
        elif record.get("source") is not None:
            path = Path(str(record["source"])).resolve()
            if not path.is_file() or not any(Path(r).resolve() in (path, *path.parents) for r in roots):
                return None
            row = int(record["source_row"])
            if _is_shard(path) is not None:
                got = read_rows(path, np.array([row]), [record.get("survey")])[0]
            else:
                from .io import read_spectra

                spectra = read_spectra(path)
                got = spectra[row] if 0 <= row < len(spectra) else None
        else:
            return None
    except (OSError, SpectrumError, KeyError, ValueError, TypeError, RuntimeError):
        return None
    return got


def source_roots(sources: Sequence[str | os.PathLike]) -> list[str]:
    """The folders a build read (a glob's fixed part, a file's folder): where sources may be read."""
    roots = []
    for source in sources:
        text = str(source)
        if glob.has_magic(text):
            fixed = []
            for part in Path(text).parts:
                if glob.has_magic(part):
                    break
                fixed.append(part)
            text = str(Path(*fixed)) if fixed else "."
        path = Path(text).resolve()
        roots.append(str(path if path.is_dir() else path.parent))
    return sorted(set(roots))


# -- thumbnails ------------------------------------------------------------------------------------


def thumbnail(spectrum: Spectrum) -> tuple[np.ndarray, float]:
    """THUMB_PIXELS of flux / scale on a log grid over the spectrum's range, and the scale."""
    good = spectrum.good
    wave, flux = spectrum.wave[good], spectrum.flux[good]
    scale = float(np.median(np.abs(flux))) if flux.size else 1.0
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    if flux.size < 2:
        return np.zeros(THUMB_PIXELS, np.float16), scale
    grid = thumb_wave(spectrum.wave[0], spectrum.wave[-1])
    edges = np.sqrt(grid[1:] * grid[:-1])
    # Mean of the pixels in each thumbnail bin (interpolated where a bin holds none).
    at = np.searchsorted(edges, wave)
    sums = np.bincount(at, weights=flux, minlength=THUMB_PIXELS)
    counts = np.bincount(at, minlength=THUMB_PIXELS)
    values = np.interp(grid, wave, flux)
    filled = counts > 0
    values[filled] = sums[filled] / counts[filled]
    return np.clip(values / scale, -65000, 65000).astype(np.float16), scale


def thumb_wave(wave_min: float, wave_max: float) -> np.ndarray:
    return np.geomspace(float(wave_min), float(max(wave_max, wave_min * (1 + 1e-6))), THUMB_PIXELS)


def column_kind(name: str) -> str:
    return "int" if name in INT_COLUMNS else "float" if name in NUMERIC_COLUMNS else "str"


def pack_records(records: list[dict], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Metadata records as plain arrays for a part file (no pickles): text, float64, int64."""
    out = {}
    for name in names:
        values = [r.get(name) for r in records]
        kind = column_kind(name)
        if kind == "int":
            out[name] = np.array([-1 if v is None else int(v) for v in values], np.int64)
        elif kind == "float":
            out[name] = np.array([_float(v) for v in values], np.float64)
        else:
            out[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
