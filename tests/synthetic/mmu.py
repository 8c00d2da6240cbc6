"""Multimodal Universe HDF5 shards written from scratch.

``mmu_sdss_like`` follows MMU's SDSS build script: float32 ``10**loglam``
wavelengths, rows of different lengths padded at the end with wavelength -1,
edge-repeated flux, ivar 0 and mask True, upper-case catalogue columns and a
space-padded ``survey`` column. ``mmu_desi_minmax`` follows their DESI script,
which keeps only ``spectrum_lambda_min/max`` of a linear grid.
``spectok_shard`` is our own writer's output.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import h5py
import numpy as np

SDSS_LENGTHS = (300, 260, 300)  # the middle row is padded by 40 pixels
SDSS_LOGLAM0, SDSS_STEP = 3.5800, 1e-4


def sdss_rows():
    """Per row: (wave Å, flux, ivar, mask) before padding, and the catalogue."""
    rng = np.random.default_rng(7)
    rows = []
    for n in SDSS_LENGTHS:
        wave = (10 ** (SDSS_LOGLAM0 + SDSS_STEP * np.arange(n))).astype(np.float32)
        flux = (5.0 + np.sin(np.arange(n) / 20.0) + rng.normal(0, 0.1, n)).astype(np.float32)
        ivar = np.full(n, 100.0, dtype=np.float32)
        mask = np.zeros(n, dtype=bool)
        mask[10:15] = True
        rows.append((wave, flux, ivar, mask))
    catalog = {
        "object_id": np.array([299489677444933632, 299489677444933633, 299489677444933634]),
        "ra": np.array([10.5, 11.0, 12.25]),
        "dec": np.array([-1.0, 0.5, 2.0]),
        "Z": np.array([0.1, 1.2, 0.0001], dtype=np.float32),
        "Z_ERR": np.array([1e-4, 2e-3, 1e-5], dtype=np.float32),
        "CLASS": np.array([b"GALAXY", b"QSO   ", b"STAR  "]),
        "SUBCLASS": np.array([b"STARFORMING", b"BROADLINE", b"G2"]),
        "ZWARNING": np.array([0, 0, 4]),
        "PLATE": np.array([266, 266, 266]),
        "survey": np.array([b"sdss  ", b"sdss  ", b"sdss  "]),
    }
    return rows, catalog


def _h5_bytes(fill) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        fill(h5)
    return buffer.getvalue()


def mmu_sdss_like() -> tuple[str, bytes]:
    rows, catalog = sdss_rows()
    width = max(SDSS_LENGTHS)

    def pad(array, value=None):
        if value is None:  # MMU pads flux in "edge" mode
            return np.pad(array, (0, width - array.size), mode="edge")
        return np.pad(array, (0, width - array.size), constant_values=value)

    def fill(h5):
        h5.create_dataset("spectrum_lambda", data=np.stack([pad(r[0], -1) for r in rows]))
        h5.create_dataset("spectrum_flux", data=np.stack([pad(r[1]) for r in rows]))
        h5.create_dataset("spectrum_ivar", data=np.stack([pad(r[2], 0) for r in rows]))
        h5.create_dataset("spectrum_mask", data=np.stack([pad(r[3], True) for r in rows]))
        h5.create_dataset("spectrum_lsf_sigma", data=np.ones((len(rows), width), np.float32))
        for name, values in catalog.items():
            h5.create_dataset(name, data=values)

    return "001-of-001.hdf5", _h5_bytes(fill)


DESI_GRID = (3600.0, 9824.0, 7781)  # min, max, pixels: DESI's brz grid in 0.8 Å steps


def mmu_desi_minmax() -> tuple[str, bytes]:
    lo, hi, n = DESI_GRID
    rng = np.random.default_rng(8)

    def fill(h5):
        h5.create_dataset("TARGETID", data=np.array([39627745452427717, 39627745452427718]))
        h5.create_dataset("object_id", data=np.array([39627745452427717, 39627745452427718]))
        h5.create_dataset("Z", data=np.array([0.35, 2.1]))
        h5.create_dataset("SPECTYPE", data=np.array([b"GALAXY", b"QSO"]))
        h5.create_dataset("spectrum_lambda_min", data=np.full(2, lo, np.float32))
        h5.create_dataset("spectrum_lambda_max", data=np.full(2, hi, np.float32))
        flux = (1.0 + rng.normal(0, 0.2, (2, n))).astype(np.float32)
        h5.create_dataset("spectrum_flux", data=flux, compression="gzip")
        h5.create_dataset("spectrum_ivar", data=np.full((2, n), 25.0, np.float32),
                          compression="gzip")
        h5.attrs["survey"] = "DESI EDR SV3"

    return "desi-001-of-001.hdf5", _h5_bytes(fill)


def spectok_spectra():
    """A few Spectrum records of different lengths, surveys and meta, for round trips."""
    from spectok_core import Spectrum

    rng = np.random.default_rng(9)
    spectra = []
    for index, (lo, hi, n, survey) in enumerate(
        [(3800.0, 9200.0, 500, "sdss"), (15140.0, 16960.0, 700, "apogee"),
         (3360.0, 10200.0, 343, "gaia_xp")]
    ):
        wave = np.geomspace(lo, hi, n)
        flux = 1.0 + rng.normal(0, 0.05, n)
        ivar = np.full(n, 400.0)
        mask = np.zeros(n, dtype=bool)
        mask[:3] = True
        meta = {"object_id": f"obj-{index}", "ra": 10.0 + index, "mjd": 51602 + index,
                "source_file": f"file{index}.fits", "index_in_file": index}
        if index == 0:
            meta.update({"class": "GALAXY", "z": 0.12, "zwarning": 0, "good": True})
        if index == 1:
            meta.update({"teff": 4800.0, "logg": 2.5, "feh": -0.3, "good": False})
        spectra.append(Spectrum(wave, flux, ivar, mask, survey, meta))
    return spectra


def spectok_shard() -> tuple[str, bytes]:
    from spectok_core.io.mmu import write_mmu_shard

    with tempfile.TemporaryDirectory() as folder:
        path = write_mmu_shard(Path(folder) / "shard-000.hdf5", spectok_spectra())
        return path.name, path.read_bytes()


LAYOUTS = {
    "mmu_sdss_like": mmu_sdss_like,
    "mmu_desi_minmax": mmu_desi_minmax,
    "spectok_shard": spectok_shard,
}
