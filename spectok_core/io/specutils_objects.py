"""specutils interop: a specutils ``Spectrum`` (``Spectrum1D``) in, and out via Spectrum.to_specutils.

specutils is an optional extra (``pip install spectok[specutils]``); it is imported only when a
specutils object is actually handed over, so the core never depends on it. Conventions follow
astropy's NDData: the mask is True on bad pixels; the uncertainty is a standard deviation,
variance or inverse variance object. A spectral axis in any spectral unit (nm, µm, Hz, eV...)
is converted to Å; wavelengths are taken as vacuum unless the metadata or header says air
(``AIRORVAC = 'air'``, ``VACUUM = F``). The flux is never resampled.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..spectrum import Spectrum, SpectrumError, air_to_vacuum, estimate_ivar, sigma_to_ivar
from .source import Limits


def is_specutils_spectrum(value: Any) -> bool:
    """True for specutils' Spectrum / Spectrum1D (checked by module, without importing it)."""
    return any(cls.__module__.startswith("specutils.") and cls.__name__ in ("Spectrum", "Spectrum1D")
               for cls in type(value).__mro__)


def _header_value(meta: dict, *keys: str) -> Any:
    header = meta.get("header") if isinstance(meta, dict) else None
    for key in keys:
        for source in (meta, header):
            if source is None:
                continue
            try:
                if key in source:
                    return source[key]
                if key.lower() in source:
                    return source[key.lower()]
            except TypeError:
                continue
    return None


def _is_air(meta: dict) -> bool:
    frame = _header_value(meta, "AIRORVAC", "WAVELENGTH_FRAME", "wavelength_frame")
    if isinstance(frame, str):
        return frame.strip().lower().startswith("air")
    vacuum = _header_value(meta, "VACUUM")
    return vacuum is False or (isinstance(vacuum, str) and vacuum.strip().upper() in ("F", "FALSE"))


def from_specutils(value: Any, name: str | None = None, survey: str | None = None,
                   max_pixels: int | None = None) -> list[Spectrum]:
    """Spectra (one per flux row) from a specutils spectrum object."""
    import astropy.units as u
    from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty

    limits = Limits.from_env(None, max_pixels)
    label = name or "specutils spectrum"
    flux_q = value.flux
    shape = tuple(np.shape(flux_q))
    if len(shape) not in (1, 2) or 0 in shape:
        raise SpectrumError(f"{label}: flux of shape {shape}; spectok reads 1-D spectra or a 2-D "
                            "stack (one spectrum per row)")
    if int(np.prod(shape)) > limits.max_pixels:
        raise SpectrumError(f"{label}: {int(np.prod(shape)):,} pixels, over the limit of "
                            f"{limits.max_pixels:,}")
    try:
        wave = value.spectral_axis.to_value(u.AA, equivalencies=u.spectral())
    except u.UnitConversionError as err:
        raise SpectrumError(f"{label}: its spectral axis ({value.spectral_axis.unit}) cannot be "
                            f"converted to a wavelength ({err})") from None
    wave = np.asarray(wave, np.float64)
    if wave.shape[-1] != shape[-1]:
        raise SpectrumError(f"{label}: {wave.shape[-1]} spectral-axis values for {shape[-1]} pixels "
                            "(a bin-edge axis); give one wavelength per pixel")
    flux = np.atleast_2d(np.asarray(flux_q.value, np.float64))
    uncertainty = value.uncertainty
    ivar = None
    if uncertainty is not None:
        array = np.atleast_2d(np.asarray(uncertainty.array, np.float64))
        unit = getattr(uncertainty, "unit", None)
        if isinstance(uncertainty, InverseVariance):
            if unit is not None and flux_q.unit != u.dimensionless_unscaled:
                array = (array * unit).to_value(flux_q.unit ** -2)
            ivar = np.where(np.isfinite(array) & (array > 0), array, 0.0)
        elif isinstance(uncertainty, VarianceUncertainty):
            if unit is not None and flux_q.unit != u.dimensionless_unscaled:
                array = (array * unit).to_value(flux_q.unit ** 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                ivar = np.where(np.isfinite(array) & (array > 0), 1.0 / array, 0.0)
        elif isinstance(uncertainty, StdDevUncertainty):
            if unit is not None and flux_q.unit != u.dimensionless_unscaled:
                array = (array * unit).to_value(flux_q.unit)
            ivar = sigma_to_ivar(array)
        else:
            raise SpectrumError(f"{label}: uncertainty of type {type(uncertainty).__name__}; "
                                "spectok reads standard deviation, variance or inverse variance")
        ivar = np.broadcast_to(ivar, flux.shape)
    mask = value.mask
    mask = np.zeros(flux.shape, bool) if mask is None else \
        np.broadcast_to(np.atleast_2d(np.asarray(mask)).astype(bool), flux.shape)
    meta_in = dict(value.meta or {})
    air = _is_air(meta_in)
    if wave[0] > wave[-1]:  # a frequency or energy axis runs the other way
        wave, flux, mask = wave[::-1], flux[:, ::-1], mask[:, ::-1]
        ivar = ivar[:, ::-1] if ivar is not None else None
    if air:
        wave = air_to_vacuum(wave)
    base: dict[str, Any] = {}
    for key, value_ in meta_in.items():
        if key == "header" or not isinstance(key, str):
            continue
        if isinstance(value_, (str, int, float, bool)) or value_ is None:
            base[key] = value_
    object_id = base.get("object_id") or _header_value(meta_in, "OBJECT", "OBJNAME") or label
    for key, names in (("ra", ("RA", "PLUG_RA")), ("dec", ("DEC", "PLUG_DEC"))):
        if key not in base:
            found = _header_value(meta_in, *names)
            if isinstance(found, (int, float)):
                base[key] = float(found)
    chosen = survey or str(base.pop("survey", "") or "") or "unknown"
    base.update({"source_file": name or "<specutils>", "format": "specutils",
                 "flux_unit": str(flux_q.unit) if flux_q.unit != u.dimensionless_unscaled
                 else base.get("flux_unit", "")})
    if air:
        base["wave_converted"] = "air to vacuum"
    out = []
    for row in range(flux.shape[0]):
        meta = dict(base)
        meta["object_id"] = str(object_id) if flux.shape[0] == 1 else f"{object_id}[{row}]"
        row_ivar = ivar[row] if ivar is not None else None
        if row_ivar is None:
            good = np.isfinite(flux[row]) & ~mask[row]
            row_ivar = estimate_ivar(flux[row], good)
            meta["ivar_estimated"] = True
        out.append(Spectrum(wave.copy(), flux[row], row_ivar, mask[row].copy(), chosen, meta))
    return out


def to_specutils(spectrum: Spectrum):
    """A specutils ``Spectrum`` of this spectrum: Å vacuum axis, flux unit, inverse variance, mask.

    The flux unit comes from ``meta['flux_unit']`` when astropy can read it (a scale such
    as 1e-17 is kept), else the flux is dimensionless and the original text stays in meta.
    """
    try:
        import astropy.units as u
        from astropy.nddata import InverseVariance
        try:
            from specutils import Spectrum as SpecutilsSpectrum
        except ImportError:  # specutils < 2
            from specutils import Spectrum1D as SpecutilsSpectrum
    except ImportError:
        raise SpectrumError("Spectrum.to_specutils needs specutils: pip install 'spectok[specutils]'") \
            from None
    text = str(spectrum.meta.get("flux_unit") or "").split("(")[0].strip()
    with warnings.catch_warnings():  # '1e-17 erg/s/cm2/Angstrom': "multiple slashes" is fine
        warnings.simplefilter("ignore", u.UnitsWarning)
        unit = u.Unit(text, parse_strict="silent") if text else u.dimensionless_unscaled
    if isinstance(unit, u.UnrecognizedUnit):
        unit = u.dimensionless_unscaled
    meta = dict(spectrum.meta)
    meta.update({"survey": spectrum.survey, "wavelength_frame": "vacuum"})
    return SpecutilsSpectrum(
        spectral_axis=np.asarray(spectrum.wave, np.float64) * u.AA,
        flux=np.asarray(spectrum.flux, np.float64) * unit,
        uncertainty=InverseVariance(np.asarray(spectrum.ivar, np.float64), unit=unit ** -2),
        mask=np.asarray(spectrum.mask, bool).copy(), meta=meta,
    )
