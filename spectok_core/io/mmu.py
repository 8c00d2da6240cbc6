"""Multimodal Universe (MMU) HDF5 shards, read and written.

The MMU layout (Audenaert et al. 2024, github.com/MultimodalUniverse): one HDF5
file per shard, one row per object, every column a top-level dataset.

* ``spectrum_lambda``, ``spectrum_flux``, ``spectrum_ivar``, ``spectrum_mask``:
  2-D (n_objects x n_pixels). Wavelengths are vacuum Å: the MMU build scripts
  store ``10**loglam`` for SDSS/BOSS and DESI's own grid (their DESI shards keep
  only ``spectrum_lambda_min/max``; that linear grid is rebuilt here). A
  ``wave_unit`` attribute, if present, overrides Å.
* Spectra shorter than the longest are padded at the end: wavelength 0 (our
  writer) or -1 (MMU's SDSS script), ivar 0, mask True. Pixels with a
  wavelength <= 0 and a trailing run that does not advance in wavelength (edge
  padding) are dropped; other masked pixels stay, masked.
* Some shards differ: ``spectrum_flux_ivar`` for the inverse variance,
  ``spectrum_flux_error`` (1 sigma) instead of it, and APOGEE's
  ``spectrum_bitmask`` (APOGEE_PIXMASK) instead of a mask, where bits 0-7
  (bad pixel, cosmic ray, saturated, unfixable, bad dark/flat/error, no sky)
  and 12 (significant sky line) mean bad - the bits ASPCAP itself rejects;
  persistence and telluric bits are warnings and stay usable.
* 1-D columns carry the catalogue: ``object_id``, ``ra``, ``dec``, ``Z``,
  ``ZERR``, ``CLASS`` / ``SPECTYPE``, ``TEFF``, ``LOGG``, ``FE_H``, ... mapped
  to our meta keys by :func:`.table.meta_from_columns`. The survey comes from
  the ``survey=`` option, a ``survey`` file attribute, or a ``survey`` column.

Each row becomes one Spectrum; a row that cannot be (all pixels bad, say) is
reported in ``problems`` and the rest of the shard is still read.

:func:`write_mmu_shard` writes our own corpus in this layout, with every meta
key as a column and ``writer = "spectok"`` in the file attributes, so that the
reader gives back the full meta dict (as written) for our shards while it maps
only the known catalogue columns of foreign ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError, estimate_ivar, sigma_to_ivar
from .registry import register
from .source import Source
from .table import meta_from_columns, parse_wave_unit, plain, survey_key, survey_option

SPECTRUM_PREFIX = "spectrum_"
IVAR_NAMES = ("spectrum_ivar", "spectrum_flux_ivar")
SIGMA_NAMES = ("spectrum_flux_error", "spectrum_error", "spectrum_sigma", "spectrum_flux_err")
#: APOGEE_PIXMASK bits 0-7 and 12; see the module docstring.
APOGEE_BAD_BITS = sum(1 << bit for bit in (0, 1, 2, 3, 4, 5, 6, 7, 12))
#: Keys read_spectra sets itself; kept under "origin_..." when our shards are read back.
PROVENANCE_KEYS = ("source_file", "format", "index_in_file")
WRITER = "spectok"
FORMAT_VERSION = 1


def _first(h5, names: Sequence[str]) -> str | None:
    return next((name for name in names if name in h5), None)


def _identify(source: Source) -> bool:
    h5 = source.h5
    return "spectrum_flux" in h5 and (
        "spectrum_lambda" in h5 or {"spectrum_lambda_min", "spectrum_lambda_max"} <= set(h5)
    )


def _read(h5, name: str, dtype=None) -> np.ndarray:
    """A whole dataset; HDF5's own errors for damaged chunks become a SpectrumError."""
    try:
        return np.asarray(h5[name][()], dtype=dtype)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise SpectrumError(
            f"dataset {name!r} cannot be read ({str(err)[:120]}); the shard is damaged or "
            "truncated: copy or download it again"
        ) from None


def _as_rows(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 1:
        return array[np.newaxis, :]
    if array.ndim != 2:
        raise SpectrumError(f"dataset {name!r} has shape {array.shape}; expected (objects, pixels)")
    return array


def _wave_factor(h5) -> float:
    unit = h5.attrs.get("wave_unit", None)
    if "spectrum_lambda" in h5:
        unit = h5["spectrum_lambda"].attrs.get("wave_unit", unit)
    unit = plain(unit)
    if unit in (None, ""):
        return 1.0  # MMU stores Å
    factor = parse_wave_unit(unit)
    if not isinstance(factor, float):
        raise SpectrumError(f"wave_unit attribute {unit!r} is not a linear wavelength unit")
    return factor


def _check_size(h5, source: Source) -> None:
    """Refuse shapes the file cannot hold before reading them (a damaged header can claim any)."""
    shape = h5["spectrum_flux"].shape
    n_pixels = shape[-1] if shape else 0
    if n_pixels > source.limits.max_pixels:
        raise SpectrumError(
            f"spectrum_flux rows have {n_pixels:,} pixels, over the {source.limits.max_pixels:,} "
            "limit; raise it with max_pixels= or SPECTOK_MAX_PIXELS"
        )
    n_values = int(np.prod(shape, dtype=np.float64))
    # gzip shrinks padding a lot but real spectra little: 64 values per byte is far beyond both
    if n_values > max(1_000_000, 64 * len(source.data)) or n_values > 500_000_000:
        raise SpectrumError(
            f"spectrum_flux claims shape {shape} but the file has only {len(source.data):,} bytes; "
            "the shard is damaged"
        )


def _arrays(h5) -> dict[str, np.ndarray]:
    """The per-pixel arrays, all (n_objects, n_pixels), wavelengths in Å."""
    flux = _as_rows(_read(h5, "spectrum_flux", np.float64), "spectrum_flux")
    if "spectrum_lambda" in h5:
        wave = _as_rows(_read(h5, "spectrum_lambda", np.float64), "spectrum_lambda")
    else:
        low = np.ravel(_read(h5, "spectrum_lambda_min", np.float64))
        high = np.ravel(_read(h5, "spectrum_lambda_max", np.float64))
        if low.size != flux.shape[0] or high.size != flux.shape[0]:
            raise SpectrumError("spectrum_lambda_min/max do not have one value per object")
        steps = np.linspace(0.0, 1.0, flux.shape[1])
        wave = low[:, None] + (high - low)[:, None] * steps[None, :]
    arrays = {"wave": wave * _wave_factor(h5), "flux": flux}
    ivar_name, sigma_name = _first(h5, IVAR_NAMES), _first(h5, SIGMA_NAMES)
    if ivar_name:
        arrays["ivar"] = _as_rows(_read(h5, ivar_name, np.float64), ivar_name)
    elif sigma_name:
        sigma = _as_rows(_read(h5, sigma_name, np.float64), sigma_name)
        arrays["ivar"] = sigma_to_ivar(sigma)
    if "spectrum_mask" in h5:
        arrays["mask"] = _as_rows(_read(h5, "spectrum_mask"), "spectrum_mask") != 0
    elif "spectrum_bitmask" in h5:
        bits = _as_rows(_read(h5, "spectrum_bitmask"), "spectrum_bitmask")
        arrays["mask"] = (bits.astype(np.int64) & APOGEE_BAD_BITS) != 0
    for name, array in arrays.items():
        if array.shape != flux.shape:
            raise SpectrumError(
                f"the {name} array has shape {array.shape} but spectrum_flux has {flux.shape}; "
                "every spectrum_* dataset must be (objects, pixels) alike"
            )
    return arrays


def _columns(h5, n_objects: int, source: Source) -> dict[str, tuple[np.ndarray, str | None]]:
    """1-D catalogue columns with one value per object: name -> (values, spectok kind)."""
    columns = {}
    for name in h5:
        try:
            item = h5[name]
            if name.startswith(SPECTRUM_PREFIX) or not hasattr(item, "shape"):
                continue
            if item.shape == (n_objects,) or (n_objects == 1 and item.shape == ()):
                columns[name] = (np.atleast_1d(item[()]), plain(item.attrs.get("kind", None)))
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            source.report(f"catalogue column {name!r} cannot be read ({str(err)[:80]}); skipped")
    return columns


def _value(raw: Any, kind: str | None) -> Any:
    value = plain(raw)
    if kind == "int" and isinstance(value, float):
        return int(value) if np.isfinite(value) else None
    if kind == "bool" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return bool(value) if value >= 0 else None
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value == "" and kind == "str":
        return None
    return value


def _row_meta(columns: dict, row: int, ours: bool) -> dict[str, Any]:
    if not ours:
        return meta_from_columns({name: values[row] for name, (values, _) in columns.items()})
    meta = {}
    for name, (values, kind) in columns.items():
        if name == "survey":
            continue
        value = _value(values[row], kind)
        if value is not None:
            meta[f"origin_{name}" if name in PROVENANCE_KEYS else name] = value
    return meta


def _survey(h5, columns: dict, row: int, options: dict) -> str:
    chosen = survey_option(options)
    if chosen:
        return chosen
    if "survey" in columns:
        key = survey_key(columns["survey"][0][row])
        if key:
            return key
    return survey_key(h5.attrs.get("survey", None)) or "unknown"


def _unpad(wave, flux, ivar, mask) -> tuple[np.ndarray, ...]:
    """Drop padding: wavelengths <= 0, then a trailing bad run that stops advancing."""
    placed = np.isfinite(wave) & (wave > 0)
    wave, flux, ivar, mask = wave[placed], flux[placed], ivar[placed], mask[placed]
    steps = np.diff(wave)
    if np.any(steps <= 0):
        first = int(np.argmax(steps <= 0)) + 1
        bad = mask | ~(ivar > 0)
        if np.all(wave[first:] <= wave[first - 1]) and np.all(bad[first:]):
            wave, flux, ivar, mask = wave[:first], flux[:first], ivar[:first], mask[:first]
    return wave, flux, ivar, mask


def _row_spectrum(arrays: dict, row: int, meta: dict, survey: str) -> Spectrum:
    wave, flux = arrays["wave"][row], arrays["flux"][row]
    mask = arrays["mask"][row] if "mask" in arrays else np.zeros(wave.size, dtype=bool)
    estimated = "ivar" not in arrays
    ivar = np.ones(wave.size) if estimated else arrays["ivar"][row]
    wave, flux, ivar, mask = _unpad(wave, flux, ivar, mask)
    meta = dict(meta)
    if estimated:
        ivar = estimate_ivar(flux, np.isfinite(flux) & ~mask)
        meta["ivar_estimated"] = True
    return Spectrum(wave, flux, ivar, mask, survey, meta)


@register(
    "mmu_hdf5", "hdf5",
    "Multimodal Universe HDF5 shard (spectrum_lambda/flux/ivar/mask + catalogue columns)",
    _identify, priority=60,
)
def read_mmu(source: Source) -> list[Spectrum]:
    try:
        return _read_shard(source)
    except (OSError, KeyError, RuntimeError) as err:  # h5py's errors for damaged metadata
        raise SpectrumError(
            f"the HDF5 shard is damaged ({type(err).__name__}: {str(err)[:120]}); "
            "copy or download it again"
        ) from None


def _read_shard(source: Source) -> list[Spectrum]:
    h5 = source.h5
    _check_size(h5, source)
    arrays = _arrays(h5)
    n_objects = arrays["flux"].shape[0]
    columns = _columns(h5, n_objects, source)
    ours = plain(h5.attrs.get("writer", None)) == WRITER
    spectra = []
    for row in range(n_objects):
        meta = _row_meta(columns, row, ours)
        label = f"row {row}" + (f" (object_id {meta['object_id']})" if "object_id" in meta else "")

        def make(row=row, meta=meta) -> Spectrum:
            return _row_spectrum(arrays, row, meta, _survey(h5, columns, row, source.options))

        spectrum = source.keep(label, make)
        if spectrum is not None:
            spectra.append(spectrum)
    return spectra


# -- writing ----------------------------------------------------------------------------------------


def _column(values: list[Any]) -> tuple[np.ndarray, str]:
    """One meta key across spectra as an HDF5-ready array plus its kind (missing = None)."""
    import h5py

    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return np.array([-1 if v is None else int(v) for v in values], dtype=np.int8), "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        if len(present) == len(values):
            return np.array(values, dtype=np.int64), "int"
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64), "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64), "float"
    text = ["" if v is None else str(v) for v in values]
    return np.array(text, dtype=h5py.string_dtype("utf-8")), "str"


def write_mmu_shard(path: str | os.PathLike, spectra: Sequence[Spectrum]) -> Path:
    """Write spectra to one HDF5 shard in the MMU layout, atomically; returns the path.

    Rows are padded at the end to the longest spectrum with wavelength 0, flux 0,
    ivar 0 and mask True. Wavelengths are float64 (float32 would blur the
    APOGEE grid), flux and ivar float32. Every meta key becomes a 1-D column
    (missing values: NaN, "" or -1 for booleans, with the type in the column's
    ``kind`` attribute). The file is written next to ``path`` under a temporary
    name and moved into place, so a reader never sees half a shard.
    """
    import h5py

    spectra = list(spectra)
    if not spectra:
        raise SpectrumError("no spectra to write: a shard needs at least one")
    for index, spectrum in enumerate(spectra):
        if not isinstance(spectrum, Spectrum):
            raise SpectrumError(f"item {index} is a {type(spectrum).__name__}, not a Spectrum")
    path = Path(path)
    n_objects, n_pixels = len(spectra), max(len(s) for s in spectra)
    wave = np.zeros((n_objects, n_pixels), dtype=np.float64)
    flux = np.zeros((n_objects, n_pixels), dtype=np.float32)
    ivar = np.zeros((n_objects, n_pixels), dtype=np.float32)
    mask = np.ones((n_objects, n_pixels), dtype=bool)
    for row, spectrum in enumerate(spectra):
        n = len(spectrum)
        wave[row, :n], flux[row, :n] = spectrum.wave, spectrum.flux
        ivar[row, :n], mask[row, :n] = spectrum.ivar, spectrum.mask
    keys: list[str] = []
    for spectrum in spectra:
        keys += [k for k in spectrum.meta if k not in keys]
    surveys = [s.survey for s in spectra]

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(temporary, "w") as h5:
            h5.attrs["writer"] = WRITER
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["wave_unit"] = "Angstrom"
            h5.attrs["wave_medium"] = "vacuum"
            if len(set(surveys)) == 1:
                h5.attrs["survey"] = surveys[0]
            h5.create_dataset("spectrum_lambda", data=wave, compression="gzip", shuffle=True)
            h5.create_dataset("spectrum_flux", data=flux, compression="gzip", shuffle=True)
            h5.create_dataset("spectrum_ivar", data=ivar, compression="gzip", shuffle=True)
            h5.create_dataset("spectrum_mask", data=mask, compression="gzip")
            h5.create_dataset("survey", data=np.array(surveys, dtype=h5py.string_dtype("utf-8")))
            for key in keys:
                name = key.replace("/", "_")
                if name.startswith(SPECTRUM_PREFIX) or name == "survey" or name in h5:
                    continue
                values = [plain(s.meta.get(key)) if s.meta.get(key) is not None else None
                          for s in spectra]
                data, kind = _column(values)
                h5.create_dataset(name, data=data).attrs["kind"] = kind
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
