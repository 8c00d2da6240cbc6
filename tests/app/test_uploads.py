"""Several files in one upload (a DESI coadd with its redrock file), and `spectok search
--redshift-catalog`, on the app's tiny model and index."""

from __future__ import annotations

import pytest

from spectok_core import SpectrumError, explore
from spectok_core.cli import main
from tests.synthetic import desi as synth_desi
from tests.synthetic import sdss as synth_sdss

from .helpers import app_test, texts


def test_coadd_and_redrock_are_paired():
    name, coadd = synth_desi.coadd()
    spectra = explore.read_uploads([(coadd, "coadd-main-dark-1234.fits"),
                                    (synth_desi.redrock()[1], "redrock-main-dark-1234.fits")])
    galaxy, star = spectra
    assert galaxy.meta["z"] == pytest.approx(0.1) and galaxy.meta["class"] == "GALAXY"
    assert star.meta["class"] == "STAR"
    assert galaxy.meta["redshift_catalog"] == "redrock-main-dark-1234.fits"
    # the order of the files does not matter, and a second, unrelated file is read too
    spectra = explore.read_uploads([(synth_desi.redrock()[1], "redrock-x.fits"),
                                    (synth_sdss.spec_legacy()[1], "spec.fits"), (coadd, name)])
    assert [s.survey for s in spectra] == ["sdss", "desi", "desi"]
    assert spectra[1].meta["z"] == pytest.approx(0.1)
    # alone, without catalogue: no redshift
    assert "z" not in explore.read_uploads([(coadd, name)])[0].meta


def test_catalogue_alone_or_unmatched_is_explained():
    with pytest.raises(SpectrumError, match="Upload the coadd-\\*.fits it belongs to"):
        explore.read_uploads([(synth_desi.redrock()[1], "redrock-1.fits")])
    spectra = explore.read_uploads([(synth_sdss.spec_legacy()[1], "spec.fits"),
                                    (synth_desi.redrock()[1], "redrock-1.fits")])
    assert len(spectra) == 1
    assert any("matches none of the uploaded DESI coadds" in p for p in spectra.problems)
    # one unreadable file of several is reported, the rest shown
    spectra = explore.read_uploads([(b"not a spectrum", "notes.txt"),
                                    (synth_sdss.spec_legacy()[1], "spec.fits")])
    assert len(spectra) == 1 and any("notes.txt" in p for p in spectra.problems)


@pytest.mark.usefixtures("app_env")
def test_app_upload_of_coadd_with_redrock_shows_redshift():
    at = app_test("pages/1_Search.py").run()
    name, coadd = synth_desi.coadd()
    at.file_uploader[0].set_value([(name, coadd, "application/octet-stream"),
                                   ("redrock-x.fits", synth_desi.redrock()[1],
                                    "application/octet-stream")])
    at.run()
    assert not at.exception and not at.error, texts(at.error)
    picker = at.selectbox(key="search_pick")
    assert len(picker.options) == 2
    assert "GALAXY  z=0.1000" in picker.options[0]
    assert "GALAXY" in " ".join(c.value for c in at.caption)


def test_search_with_redshift_catalog(app_data, tmp_path, capsys):
    model, index, _ = app_data
    name, coadd = synth_desi.coadd()
    (tmp_path / name).write_bytes(coadd)
    (tmp_path / "redrock.fits").write_bytes(synth_desi.redrock()[1])
    args = ["search", str(tmp_path / name), "--index", str(index), "--model", str(model), "-k", "2"]
    assert main(args + ["--redshift-catalog", str(tmp_path / "redrock.fits")]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# spectrum")]
    assert len(heads) == 2 and "GALAXY z=0.1000" in heads[0] and "STAR/K" in heads[1]
    assert main(args) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# spectrum")]
    assert len(heads) == 2 and "GALAXY" not in heads[0]
    spec = tmp_path / "spec.fits"
    spec.write_bytes(synth_sdss.spec_legacy()[1])
    assert main(["search", str(spec), "--index", str(index), "--model", str(model),
                 "--redshift-catalog", str(tmp_path / "redrock.fits")]) == 1
    assert "joined to DESI coadd" in capsys.readouterr().err
