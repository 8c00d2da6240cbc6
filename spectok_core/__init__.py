"""spectok: a universal spectral tokenizer for astronomy.

Public API (kept stable; the CLI, the app and external evaluation use it)::

    import spectok_core as sc
    spectra = sc.read_spectra(path_or_bytes, format=None, name=None)  # -> list[sc.Spectrum]
    tok = sc.Tokenizer.from_pretrained()          # shipped default weights; or a path
    emb = tok.embed(spectra)                      # (N, D) float32, L2-normalised
    toks = tok.tokenize(spectra)                  # per-spectrum tokens + their wavelength spans
    rec = tok.reconstruct(spectrum, wave=None)    # Spectrum on `wave` (default: its own grid)
    idx = sc.SpectrumIndex.load(path=None)        # default: the shipped index
    hits = idx.search(emb[0], k=10, where=None)   # pandas DataFrame, best first
"""

from . import surveys
from .io import FORMATS, SpectrumList, read_spectra
from .spectrum import Spectrum, SpectrumError, air_to_vacuum

__version__ = "0.1.0"

# Heavy parts are imported on first use, so reading files never pays for torch or pandas.
_LAZY = {
    "Tokenizer": ("spectok_core.model.tokenizer", "Tokenizer"),  # torch, ~3 s
    "SpectrumIndex": ("spectok_core.index", "SpectrumIndex"),  # pandas, faiss
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'spectok_core' has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "Spectrum",
    "SpectrumError",
    "SpectrumIndex",
    "SpectrumList",
    "Tokenizer",
    "air_to_vacuum",
    "read_spectra",
    "surveys",
]
