"""Reading what a user uploads: size limits, the isolated parse, DESI catalogue pairing, errors."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..spectrum import Spectrum, SpectrumError
from .common import spectrum_label

# -- reading what the user gives us --------------------------------------------------------


def upload_limit_bytes() -> int:
    """The size limit on one upload (SPECTOK_MAX_UPLOAD_MB, default 200 MB)."""
    from ..io.source import Limits

    return Limits.from_env().max_bytes


def read_upload(data: bytes, name: str, *, isolated: bool = True, **options):
    """Spectra from uploaded bytes; too large or empty files raise SpectrumError.

    ``isolated``: parse in a worker process with memory and CPU-time limits
    (:func:`spectok_core.io.sandbox.read_isolated`), so that a crafted file that
    crashes or floods a parser costs that worker, not the server.
    """
    from ..io import read_spectra
    from ..io.sandbox import read_isolated

    limit = upload_limit_bytes()
    if len(data) > limit:
        raise SpectrumError(
            f"{name} is {len(data) / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB upload limit; "
            "upload one spectrum, or cut the file down"
        )
    if not data:
        raise SpectrumError(f"{name} is empty (0 bytes); upload a spectrum file")
    if isolated:
        return read_isolated(bytes(data), name, **options)
    return read_spectra(bytes(data), name=name, **options)


#: What a DESI coadd and its redshift catalogue share in their names (coadd-X.fits, redrock-X.fits).
_DESI_PREFIXES = ("coadd-", "spectra-", "redrock-", "zbest-", "zcatalog-", "zpix-", "ztile-")


def _desi_stem(name: str) -> str:
    stem = Path(name).name.lower()
    for suffix in (".gz", ".fits", ".fit"):
        stem = stem.removesuffix(suffix)
    for prefix in _DESI_PREFIXES:
        if stem.startswith(prefix):
            return stem[len(prefix):]
    return stem


def read_uploads(files: Sequence[tuple[bytes, str]]):
    """Spectra of several files uploaded together; DESI redshift catalogues are paired.

    A ``redrock-*.fits`` / zcatalog among the files is not a spectrum: it is joined to
    the DESI coadd it belongs to (the one with the same name after ``coadd-`` /
    ``redrock-``, else any coadd whose TARGETIDs it holds), so that the coadd's
    spectra carry Z, ZWARN and SPECTYPE. What could not be paired is listed in
    ``problems``; a catalogue uploaded alone raises SpectrumError saying what to add.
    """
    from ..io import SpectrumList

    files = [(bytes(data), str(name)) for data, name in files]
    if not files:
        raise SpectrumError("no file was uploaded")
    many = len(files) > 1
    result, used = SpectrumList(), set()
    catalogs: list[tuple[bytes, str]] = []
    read: list[tuple[bytes, str, Any]] = []
    failed: list[SpectrumError] = []
    for data, name in files:
        try:
            read.append((data, name, read_upload(data, name)))
        except SpectrumError as err:
            # The DESI reader recognises a redshift catalogue and refuses it as a spectrum.
            if "a DESI redshift catalogue" in str(err):
                catalogs.append((data, name))
            elif not many:
                raise
            else:  # one bad file of several: say so, show the others
                failed.append(err)
                result.problems.append(split_error(err)[0])
    if not read and catalogs and not failed:
        names = ", ".join(n for _, n in catalogs)
        raise SpectrumError(
            f"{names}: DESI redshift catalogue{'s' if len(catalogs) > 1 else ''}, not spectra. "
            "Upload the coadd-*.fits it belongs to together with it (select both files)")
    for data, name, spectra in read:
        if catalogs and spectra and spectra[0].meta.get("format") == "desi_coadd":
            stem = _desi_stem(name)
            for cat_data, cat_name in sorted(catalogs, key=lambda c: _desi_stem(c[1]) != stem):
                try:
                    joined = read_upload(data, name, redshift_catalog=cat_data)
                except SpectrumError as err:
                    if "none of its targets is in the redshift catalogue" in str(err):
                        continue
                    raise
                for spectrum in joined:
                    spectrum.meta["redshift_catalog"] = cat_name
                spectra = joined
                used.add(cat_name)
                break
            else:
                result.problems.append(f"{name}: none of the uploaded redshift catalogues "
                                       "holds its targets; shown without redshifts")
        result.extend(spectra)
        result.problems.extend(f"{name}: {p}" if many else p for p in spectra.problems)
    for _, cat_name in catalogs:
        if cat_name not in used:
            result.problems.append(f"{cat_name}: a redshift catalogue that matches none of the "
                                   "uploaded DESI coadds; not used")
    if not result and failed:
        raise failed[0]
    return result


def formats_help() -> str:
    """Which formats the readers take (for error messages)."""
    from ..io import describe_formats

    return describe_formats()


def formats_table() -> pd.DataFrame:
    """Every readable format: its name, container and what it is (for the app's help)."""
    from ..io import FORMATS

    rows = sorted(FORMATS.values(), key=lambda f: (f.kind, f.priority, f.name))
    return pd.DataFrame({"format": [f.name for f in rows], "container": [f.kind for f in rows],
                         "what it reads": [f.description for f in rows]})


def split_error(err: Exception | str) -> tuple[str, str]:
    """A reader's message as (what was wrong, the list of formats it appended, if any).

    Readers end some messages with the whole format list (one indented line per
    format); a page shows the sentence prominently and the list folded away.
    """
    lines = str(err).splitlines()
    listed = [line for line in lines[1:] if line.startswith("  ")]
    said = [lines[0]] + [line for line in lines[1:] if not line.startswith("  ")] if lines else [""]
    text = " ".join(part.strip() for part in said if part.strip())
    if listed:
        text = text.replace("spectok reads:", "").replace("  ", " ").strip()
        text = text.rstrip(" .:") + ". See the formats spectok reads below."
    return text, "\n".join(listed)


def write_csv(spectrum: Spectrum, path: str | os.PathLike | None = None, title: str = "",
              credit: str = "") -> bytes:
    """A spectrum as a readable CSV that ``read_spectra`` reads back with its labels.

    The header comments carry the survey and labels as ``# KEY: value`` lines,
    the generic table reader's keyword convention; columns are vacuum
    wavelength (Å), flux, error (σ; 0 for bad pixels) and mask (1 = bad).
    Returns the bytes; with ``path`` also writes them atomically.
    """
    meta = spectrum.meta
    head = [f"# title: {title or spectrum_label(spectrum)}"]
    if credit:
        head.append(f"# credit: {credit}")
    head.append("# wavelengths: vacuum Angstrom")
    head.append(f"# SURVEY: {spectrum.survey}")
    for key, name in (("object_id", "OBJECT_ID"), ("class", "CLASS"), ("z", "Z"), ("teff", "TEFF"),
                      ("logg", "LOGG"), ("feh", "FEH"), ("spectral_type", "SPECTRAL_TYPE")):
        value = meta.get(key)
        if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
            continue
        head.append(f"# {name}: {value}")
    with np.errstate(divide="ignore"):
        sigma = np.where(spectrum.good, 1.0 / np.sqrt(np.maximum(spectrum.ivar, 1e-30)), 0.0)
    body = io.StringIO()
    body.write("wave,flux,error,mask\n")
    for w, f, s, m in zip(spectrum.wave, spectrum.flux, sigma, spectrum.mask):
        body.write(f"{w:.4f},{f:.6g},{s:.4g},{int(m)}\n")
    data = ("\n".join(head) + "\n" + body.getvalue()).encode("utf-8")
    if path is not None:
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return data

