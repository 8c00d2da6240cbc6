"""FITS header and table values as plain Python, shared by the survey readers."""

from __future__ import annotations

from typing import Any

import numpy as np


def plain_value(value: Any) -> Any:
    """A FITS value as plain Python (str stripped, numpy scalars unwrapped); None if unusable.

    Blank strings, arrays and non-finite numbers become None, so metadata never
    carries a NaN or an empty label.
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, np.ndarray):
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        if not np.isfinite(value):
            return None
        # float32 columns print as their shortest decimal (0.4562511, not 0.4562511146068573)
        return float(str(value)) if isinstance(value, np.float32) else float(value)
    return None


def header_value(header, key: str) -> Any:
    """A header value as plain Python; None when absent or when the card is damaged."""
    try:
        return plain_value(header.get(key))
    except Exception:  # astropy raises VerifyError on an unparsable card
        return None
