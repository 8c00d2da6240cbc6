"""Shared test fixtures.

Real survey files live in ``../shared/data/formats`` beside the repository;
tests that need them use the ``shared_formats`` fixture and skip, with a reason,
when that folder is absent (it is never copied into the repository).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FORMATS = REPO.parent / "shared" / "data" / "formats"


def shared_files(subfolder: str, pattern: str = "*") -> list[Path]:
    """Files under ../shared/data/formats/SUBFOLDER, for parametrising (empty when absent)."""
    folder = SHARED_FORMATS / subfolder
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob(pattern) if p.is_file())


@pytest.fixture
def shared_formats() -> Path:
    if not SHARED_FORMATS.is_dir():
        pytest.skip(f"real survey files not present at {SHARED_FORMATS}")
    return SHARED_FORMATS


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real survey file not present: {path}")
    return path
