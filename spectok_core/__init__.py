"""spectok: a universal spectral tokenizer for astronomy.

Public API (kept stable)::

    import spectok_core as sc
    spectra = sc.read_spectra(path_or_bytes, format=None, name=None)
"""

from . import surveys
from .io import FORMATS, SpectrumList, read_spectra
from .spectrum import Spectrum, SpectrumError, air_to_vacuum

__version__ = "0.1.0"

__all__ = [
    "FORMATS",
    "Spectrum",
    "SpectrumError",
    "SpectrumList",
    "air_to_vacuum",
    "read_spectra",
    "surveys",
]
