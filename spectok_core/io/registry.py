"""Readers registered by format, each with an identifier function (the specutils idea).

A reader module registers itself with :func:`register`; detection asks every
identifier in priority order, so specific survey layouts win over the generic
table reader, which comes last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..spectrum import Spectrum
from .source import Source


@dataclass(frozen=True)
class Format:
    name: str
    kind: str  # container: "fits", "text", "hdf5" or "npz"
    description: str
    identify: Callable[[Source], bool]
    read: Callable[[Source], list[Spectrum]]
    priority: int = 50  # lower is asked first; generic readers use 90+


FORMATS: dict[str, Format] = {}


def register(
    name: str, kind: str, description: str, identify: Callable[[Source], bool], priority: int = 50
) -> Callable[[Callable[[Source], list[Spectrum]]], Callable[[Source], list[Spectrum]]]:
    """Decorator: ``@register("sdss_spec", "fits", "...", identify)`` on a reader function."""

    def decorator(read: Callable[[Source], list[Spectrum]]):
        if name in FORMATS:
            raise ValueError(f"format {name!r} registered twice")
        FORMATS[name] = Format(name, kind, description, identify, read, priority)
        return read

    return decorator


def formats_for(kind: str) -> list[Format]:
    return sorted((f for f in FORMATS.values() if f.kind == kind), key=lambda f: f.priority)


def describe_formats() -> str:
    """One line per readable format, for error messages and ``--help``."""
    return "\n".join(
        f"  {f.name:<18} {f.description}"
        for f in sorted(FORMATS.values(), key=lambda f: (f.kind, f.priority, f.name))
    )
