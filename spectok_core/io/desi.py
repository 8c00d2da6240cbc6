"""DESI spectra: ``coadd-*.fits`` (and ``spectra-*.fits``), plus redshift catalogues.

``desi_coadd``
    ``FIBERMAP`` table (TARGETID, TARGET_RA, TARGET_DEC, OBJTYPE, ...) and, per arm
    X in B/R/Z (or a single BRZ), images ``X_WAVELENGTH`` (vacuum Å), ``X_FLUX``
    (1e-17 erg/s/cm2/Å, one row per target), ``X_IVAR`` and ``X_MASK``
    (``X_RESOLUTION`` is not used). Each FIBERMAP row becomes one Spectrum.

**Joining the arms.** The arms share one linear 0.8 Å grid: in the real coadds the
b/r (5760-5800 Å, 51 px) and r/z (7520-7620 Å, 126 px) overlap wavelengths agree to
5e-10 Å. So overlapping pixels are the *same* pixels seen by two cameras and are
inverse-variance combined (flux = Σ f·w / Σ w, ivar = Σ w, w = ivar of the unmasked
arm pixels); nothing is resampled. If the overlap wavelengths of a file do not
coincide (to 1e-3 of a pixel), the arms are cut at the middle of the overlap
instead: the bluer arm keeps the pixels below it, the redder arm those above.

**Mask.** Any non-zero ``X_MASK`` bit is bad, as in the DESI pipeline itself
(redrock and desispec zero the ivar of pixels with mask != 0).

**Skipped rows** (each reported through ``source.report`` with its TARGETID): sky
fibres (OBJTYPE=SKY), fibres without a target (negative TARGETID: unassigned or
stuck positioners) and empty fibres (all-zero flux or ivar in every arm).

**Redshifts.** ``read_spectra(coadd, redshift_catalog=...)`` takes a path or the
bytes of a ``redrock-*.fits`` (REDSHIFTS HDU) or a ``zcatalog``/``zall``/``zpix``
table with TARGETID, Z, ZERR, ZWARN, SPECTYPE, SUBTYPE, joined by TARGETID into
meta (z, z_err, zwarning, class = SPECTYPE upper-cased, subclass = SUBTYPE). When a
TARGETID has several rows (zall), the ZCAT_PRIMARY one is used.

``desi_redshifts``
    A redrock/zcatalog file given on its own is recognised so that the error can
    say what it is and how to use it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError
from .fitsvalues import header_value, plain_value
from .registry import register
from .source import Source

FLUX_UNIT = "1e-17 erg/s/cm2/Angstrom"
_ZCAT_COLUMNS = {"TARGETID", "Z", "ZWARN", "SPECTYPE"}


def _columns(hdu) -> dict[str, str]:
    columns = getattr(hdu, "columns", None)
    return {c.upper(): c for c in columns.names} if columns is not None else {}


def _by_name(hdul) -> dict:
    """HDUs by upper-case EXTNAME (first of each); an HDU whose EXTNAME card is damaged
    (astropy raises on access) is left out."""
    hdus = {}
    for hdu in hdul:
        try:
            hdus.setdefault(str(hdu.name).upper(), hdu)
        except Exception:
            continue
    return hdus


def _arm_names(hdul) -> list[str]:
    names = _by_name(hdul).keys()
    return [
        name[: -len("_WAVELENGTH")]
        for name in names
        if name.endswith("_WAVELENGTH")
        and {name.replace("_WAVELENGTH", "_FLUX"), name.replace("_WAVELENGTH", "_IVAR")} <= names
    ]


def _zcat_hdu(hdul):
    """The redshift table of a redrock/zcatalog file, or None."""
    for hdu in hdul[1:]:
        if _ZCAT_COLUMNS <= set(_columns(hdu)):
            return hdu
    return None


# -- coadds ------------------------------------------------------------------------


def _identify_coadd(source: Source) -> bool:
    if source.kind != "fits":
        return False
    hdul = source.hdul
    return "FIBERMAP" in _by_name(hdul) and bool(_arm_names(hdul))


def _arm_data(hdul, arm: str, n_rows: int) -> tuple[np.ndarray, ...]:
    hdus = _by_name(hdul)
    with np.errstate(all="ignore"):  # damaged values become NaN/inf, masked by Spectrum
        wave = np.asarray(hdus[f"{arm}_WAVELENGTH"].data, dtype=np.float64).ravel()
        flux = np.atleast_2d(np.asarray(hdus[f"{arm}_FLUX"].data, dtype=np.float64))
        ivar = np.atleast_2d(np.asarray(hdus[f"{arm}_IVAR"].data, dtype=np.float64))
    mask_hdu = hdus.get(f"{arm}_MASK")
    if mask_hdu is not None and mask_hdu.data is not None:
        mask = np.atleast_2d(np.asarray(mask_hdu.data)) != 0
    else:
        mask = np.zeros(flux.shape, dtype=bool)
    shapes = {flux.shape, ivar.shape, mask.shape}
    if len(shapes) != 1 or flux.shape != (n_rows, wave.size):
        raise SpectrumError(
            f"arm {arm}: FLUX {flux.shape}, IVAR {ivar.shape} and MASK {mask.shape} do not match "
            f"{n_rows} FIBERMAP rows x {wave.size} wavelengths; the file is inconsistent"
        )
    if wave.size < 2 or not np.all(np.diff(wave) > 0):
        raise SpectrumError(f"arm {arm}: {arm}_WAVELENGTH is not strictly increasing")
    return wave, flux, ivar, mask


def join_arms(arms: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """Join (wave, flux, ivar, bad) arms on their native pixels, as the module docstring says."""
    arms = sorted(arms, key=lambda arm: arm[0][0])
    wave, flux, ivar, bad = arms[0]
    ivar = np.where(bad, 0.0, ivar)
    for wave2, flux2, ivar2, bad2 in arms[1:]:
        ivar2 = np.where(bad2, 0.0, ivar2)
        if wave2[0] > wave[-1]:
            wave, flux, ivar = (
                np.concatenate(pair) for pair in ((wave, wave2), (flux, flux2), (ivar, ivar2))
            )
            continue
        tol = 1e-3 * min(np.min(np.diff(wave)), np.min(np.diff(wave2)))
        tail = wave >= wave2[0] - tol
        head = wave2 <= wave[-1] + tol
        if tail.sum() == head.sum() and np.all(np.abs(wave[tail] - wave2[head]) <= tol):
            weight = ivar[tail] + ivar2[head]
            with np.errstate(invalid="ignore", divide="ignore"):
                shared = np.where(
                    weight > 0, (flux[tail] * ivar[tail] + flux2[head] * ivar2[head]) / weight, 0.0
                )
            wave = np.concatenate([wave[~tail], wave[tail], wave2[~head]])
            flux = np.concatenate([flux[~tail], shared, flux2[~head]])
            ivar = np.concatenate([ivar[~tail], weight, ivar2[~head]])
        else:
            middle = 0.5 * (wave2[0] + wave[-1])
            keep, keep2 = wave < middle, wave2 >= middle
            wave = np.concatenate([wave[keep], wave2[keep2]])
            flux = np.concatenate([flux[keep], flux2[keep2]])
            ivar = np.concatenate([ivar[keep], ivar2[keep2]])
    return wave, flux, ivar, ivar <= 0


def _skip_reason(targetid: int | None, objtype: str | None, arms, row: int) -> str | None:
    if objtype and objtype.upper() == "SKY":
        return "sky fibre (OBJTYPE=SKY)"
    if targetid is not None and targetid < 0:
        return "no target on this fibre (negative TARGETID: unassigned or stuck positioner)"
    if all(np.all(flux[row] == 0) for _, flux, _, _ in arms):
        return "empty fibre (all-zero flux)"
    if all(np.all(ivar[row] == 0) for _, _, ivar, _ in arms):
        return "empty fibre (all-zero inverse variance)"
    return None


@register(
    "desi_coadd", "fits",
    "DESI coadd-*/spectra-*.fits (FIBERMAP + B/R/Z _WAVELENGTH/_FLUX/_IVAR/_MASK)",
    _identify_coadd, priority=20,
)
def read_coadd(source: Source) -> list[Spectrum]:
    hdul = source.hdul
    arm_names = _arm_names(hdul)
    fibermap_hdu = _by_name(hdul).get("FIBERMAP")
    if fibermap_hdu is None or not arm_names:
        raise SpectrumError(
            f"{source.name}: not a DESI coadd: it needs a FIBERMAP table and per-arm "
            "X_WAVELENGTH, X_FLUX and X_IVAR HDUs (X = B, R, Z)"
        )
    fibermap = fibermap_hdu.data
    cols = _columns(fibermap_hdu)
    if fibermap is None or len(fibermap) == 0:
        raise SpectrumError(
            f"{source.name}: the FIBERMAP table is empty; the file holds no spectra"
        )
    n_rows = len(fibermap)
    arms = [_arm_data(hdul, arm, n_rows) for arm in arm_names]
    redshifts = _load_redshifts(source)
    header = hdul[0].header
    file_meta = {
        "desi_survey": header_value(header, "SURVEY"),
        "program": header_value(header, "PROGRAM"),
        "healpix": header_value(header, "HPXPIXEL"),
        "tileid": header_value(header, "TILEID"),
    }

    def col(name: str, row: int):
        return plain_value(fibermap[cols[name]][row]) if name in cols else None

    spectra, matched = [], 0
    for row in range(n_rows):
        targetid, objtype = col("TARGETID", row), col("OBJTYPE", row)
        label = f"row {row} (TARGETID {targetid})"
        reason = _skip_reason(targetid, objtype, arms, row)
        if reason:
            source.report(f"{label}: {reason}; skipped")
            continue
        meta = {
            "object_id": str(targetid) if targetid is not None else None,
            "targetid": targetid,
            "ra": col("TARGET_RA", row), "dec": col("TARGET_DEC", row),
            "objtype": objtype,
            "flux_unit": FLUX_UNIT,
            **file_meta,
            "tileid": col("TILEID", row) or file_meta["tileid"],
            "fiber": col("FIBER", row),
            "coadd_fiberstatus": col("COADD_FIBERSTATUS", row),
            "coadd_numexp": col("COADD_NUMEXP", row),
        }
        if redshifts is not None:
            if targetid in redshifts:
                meta.update(redshifts[targetid])
                matched += 1
            else:
                source.report(f"{label}: not in the redshift catalogue; read without a redshift")
        meta = {k: v for k, v in meta.items() if v is not None}
        parts = [(w, f[row], i[row], m[row]) for w, f, i, m in arms]
        spectrum = source.keep(label, lambda parts=parts, meta=meta: Spectrum(
            *join_arms(parts), survey="desi", meta=meta))
        if spectrum is not None:
            spectra.append(spectrum)
    if redshifts is not None and spectra and matched == 0:
        raise SpectrumError(
            f"{source.name}: none of its targets is in the redshift catalogue "
            f"{source.options.get('redshift_catalog')!r}; pass the redrock/zcatalog file "
            "that belongs to this coadd"
        )
    return spectra


# -- redshift catalogues -------------------------------------------------------------


def _load_redshifts(source: Source) -> dict[int, dict[str, Any]] | None:
    """TARGETID -> z/z_err/zwarning/class/subclass from options['redshift_catalog'], or None."""
    given = source.options.get("redshift_catalog")
    if given is None:
        return None
    if isinstance(given, (bytes, bytearray, memoryview)):
        catalog = Source(bytes(given), "redshift_catalog", source.limits)
    elif isinstance(given, (str, os.PathLike)):
        path = os.fspath(given)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as err:
            raise SpectrumError(
                f"redshift_catalog {path}: cannot read it ({err.strerror})"
            ) from None
        catalog = Source(data, path, source.limits)
    else:
        raise SpectrumError(
            f"redshift_catalog must be a path or bytes of a redrock/zcatalog FITS file, "
            f"not {type(given).__name__}"
        )
    if catalog.kind != "fits":
        raise SpectrumError(f"redshift_catalog {catalog.name}: not a FITS file")
    hdu = _zcat_hdu(catalog.hdul)
    if hdu is None:
        raise SpectrumError(
            f"redshift_catalog {catalog.name}: no table with TARGETID, Z, ZWARN and SPECTYPE; "
            "give a redrock-*.fits (REDSHIFTS HDU) or a zcatalog/zall/zpix file"
        )
    table, cols = hdu.data, _columns(hdu)
    primary = None
    if "ZCAT_PRIMARY" in cols:
        primary = np.asarray(table[cols["ZCAT_PRIMARY"]]).astype(bool)
    result: dict[int, dict[str, Any]] = {}
    for row in range(len(table)):
        targetid = plain_value(table[cols["TARGETID"]][row])
        if targetid in result and (primary is None or not primary[row]):
            continue
        spectype = plain_value(table[cols["SPECTYPE"]][row])
        entry = {
            "z": plain_value(table[cols["Z"]][row]),
            "z_err": plain_value(table[cols["ZERR"]][row]) if "ZERR" in cols else None,
            "zwarning": plain_value(table[cols["ZWARN"]][row]),
            "class": spectype.upper() if isinstance(spectype, str) else None,
            "subclass": plain_value(table[cols["SUBTYPE"]][row]) if "SUBTYPE" in cols else None,
        }
        result[targetid] = {k: v for k, v in entry.items() if v is not None}
    return result


def _identify_redshifts(source: Source) -> bool:
    if source.kind != "fits":
        return False
    hdul = source.hdul
    return not _arm_names(hdul) and _zcat_hdu(hdul) is not None


@register(
    "desi_redshifts", "fits",
    "DESI redrock-*/zcatalog redshift table (not spectra: pass as redshift_catalog=)",
    _identify_redshifts, priority=20,
)
def read_redshifts(source: Source) -> list[Spectrum]:
    hdu = _zcat_hdu(source.hdul)
    n = len(hdu.data) if hdu is not None and hdu.data is not None else 0
    raise SpectrumError(
        f"{source.name}: a DESI redshift catalogue ({n} rows of TARGETID/Z/ZWARN/SPECTYPE), "
        "not spectra. Read the matching coadd-*.fits "
        "and pass this file with it: read_spectra(coadd, redshift_catalog=this_file)"
    )
