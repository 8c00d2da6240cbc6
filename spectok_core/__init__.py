"""spectok: a universal spectral tokenizer for astronomy.

Public API (kept stable)::

    import spectok_core as sc
    spectra = sc.read_spectra(path_or_bytes, format=None, name=None)
"""

from . import surveys
from .io import FORMATS, SpectrumList, read_spectra
from .spectrum import Spectrum, SpectrumError, air_to_vacuum

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "SpectrumIndex":  # imported on first use: it brings in pandas (~0.5-1 s)
        from .index import SpectrumIndex

        return SpectrumIndex
    raise AttributeError(f"module 'spectok_core' has no attribute {name!r}")

__all__ = [
    "FORMATS",
    "Spectrum",
    "SpectrumError",
    "SpectrumIndex",
    "SpectrumList",
    "air_to_vacuum",
    "read_spectra",
    "surveys",
]
