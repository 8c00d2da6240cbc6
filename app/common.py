"""Streamlit glue shared by the pages: cached model and index, the query picker, safe pages.

Layout only: every number and figure comes from :mod:`spectok_core.explore`.
The query (the spectrum being explored) lives in ``st.session_state["query"]``
so every page sees the same one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import streamlit as st

APP_DIR = Path(__file__).resolve().parent
# Pages import this module wherever they run from; the repository root comes first so
# that this checkout's spectok_core is the one imported.
for _folder in (APP_DIR, APP_DIR.parent):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from icon import page_icon  # noqa: E402

from spectok_core import SpectrumError, explore  # noqa: E402
from spectok_core.io import sandbox  # noqa: E402

log = logging.getLogger("spectok.app")
QUERY = "query"


# -- resources -------------------------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the model…")
def _tokenizer(model: str):
    return explore.load_tokenizer(model or None)


@st.cache_resource(show_spinner="Opening the index…")
def _index(model: str, index: str):
    tok = _tokenizer(model)
    loaded = explore.load_index(tok, index or None)
    explore.warm_up(tok)  # once per server: the first query is then as fast as the next
    return loaded


def _paths() -> tuple[str, str]:
    model, index = explore.model_path(), explore.index_path()
    return (str(model) if model else "", str(index) if index else "")


def tokenizer():
    """The cached tokenizer, or None after showing why it could not be loaded."""
    try:
        return _tokenizer(_paths()[0])
    except SpectrumError as err:
        st.error(f"The model could not be loaded: {err}")
        return None


def resources():
    """(tokenizer, index), or (tokenizer or None, None) after a friendly message."""
    tok = tokenizer()
    if tok is None:
        return None, None
    try:
        return tok, _index(*_paths())
    except SpectrumError as err:
        st.error(f"The index could not be opened: {err}")
        return tok, None


# -- pages never crash -------------------------------------------------------------------------


def page(title: str, body: Callable[[], None]) -> None:
    """Set up a page and run its body; errors become messages, never tracebacks."""
    st.set_page_config(page_title=f"spectok · {title}", page_icon=page_icon(), layout="wide")
    # The next upload's reader worker starts once this page is sent, not beside its embedding.
    with sandbox.spare_after_page():
        guard(body, title)


def guard(body: Callable[[], None], title: str = "") -> None:
    """Run a page body; a SpectrumError or any unexpected error becomes a message."""
    try:
        body()
    except SpectrumError as err:
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - the page must survive anything
        log.exception("page %s failed", title)
        st.error(
            f"Something went wrong on this page ({type(err).__name__}: {err}). "
            "Try another spectrum or reload; the details are in the server log."
        )


def show_read_error(err: SpectrumError | str, name: str) -> None:
    """What was wrong with a file, and (folded) which formats work."""
    message, _ = explore.split_error(err)
    message = message.removeprefix(f"{name}: ")
    st.error(f"**{name}** could not be read: {message}")
    with st.expander("Which formats work?"):
        st.dataframe(explore.formats_table(), hide_index=True, key="formats_table")
        st.caption("Tables need a header naming the columns: wave/wavelength/lambda/loglam, "
                   "flux, and optionally error/ivar and mask. Compressed (.gz) files are fine.")


# -- the query --------------------------------------------------------------------------------


def set_query(spectrum, source: str, row: int | None = None) -> None:
    """Make ``spectrum`` the query of every page (its embedding is computed on demand)."""
    key = f"{source}|{row}|{explore.spectrum_label(spectrum)}|{len(spectrum)}"
    current = st.session_state.get(QUERY)
    if current is not None and current["key"] == key:
        return
    st.session_state[QUERY] = {"spectrum": spectrum, "source": source, "row": row, "key": key,
                               "vector": None}


def query() -> dict | None:
    return st.session_state.get(QUERY)


def query_vector(tok, index=None) -> np.ndarray:
    """The query's embedding: the stored one for an indexed spectrum, else embedded now."""
    q = query()
    if q["vector"] is None:
        if q["row"] is not None and index is not None:
            q["vector"] = index.embedding(q["row"])
        else:
            q["vector"] = tok.embed([q["spectrum"]])[0]
    return q["vector"]


def _read_uploaded(uploaded: list) -> list | None:
    """Spectra of the uploaded files (read once per set of files), or None after a friendly error.

    Several files may come together: a DESI coadd with its redrock-*.fits is paired by
    :func:`explore.read_uploads`, so its spectra carry the pipeline's redshifts.
    """
    cache = st.session_state.setdefault("_uploads", {})
    key = "||".join(f"{u.file_id}|{u.name}|{u.size}" for u in uploaded)
    names = ", ".join(u.name for u in uploaded)
    if key not in cache:
        limit = explore.upload_limit_bytes()
        too_big = [u for u in uploaded if u.size > limit]
        if too_big:
            result = (f"{too_big[0].name} is {too_big[0].size / 2**20:.1f} MB, over "
                      f"the {limit / 2**20:.0f} MB limit; upload a single spectrum file")
        else:
            try:
                result = explore.read_uploads([(u.getvalue(), u.name) for u in uploaded])
            except SpectrumError as err:
                # Only the text is kept: the exception's context and frames would keep alive
                # whatever the failed read allocated.
                result = str(err)
        cache.clear()  # keep only the latest upload in memory
        cache[key] = result
    result = cache[key]
    if isinstance(result, str):
        show_read_error(result, names)
        return None
    return result


def pick_query(index=None, key: str = "picker") -> bool:
    """The three ways to choose a spectrum: upload, bundled example, indexed id.

    Sets the session's query when a spectrum is chosen. Returns False when the
    choice failed (the error is shown): the page should then show nothing else,
    rather than results for an older query.
    """
    sources = ["Upload a file", "Bundled example"] + (["Indexed spectrum"] if index is not None else [])
    choice = st.radio("Spectrum", sources, horizontal=True, key=f"{key}_source",
                      label_visibility="collapsed")
    if choice == "Upload a file":
        uploaded = st.file_uploader(
            "Upload a spectrum: SDSS/BOSS, DESI, LAMOST, APOGEE, Gaia XP, MaNGA/MaStar, "
            "SpeX, MILES/STELIB files, Multimodal Universe HDF5 shards, or a CSV/ECSV/text "
            "table with wavelength and flux columns. Several files at once are fine: a DESI "
            "coadd together with its redrock-*.fits gets the pipeline's redshifts.",
            key=f"{key}_upload", accept_multiple_files=True,
        )
        if not uploaded:
            st.caption(f"Up to {explore.upload_limit_bytes() / 2**20:.0f} MB. "
                       "Formats are recognised from the content, not the file name.")
            return True
        spectra = _read_uploaded(uploaded)
        if not spectra:
            return False
        for problem in getattr(spectra, "problems", []):
            st.warning(f"Skipped: {problem}")
        chosen = 0
        if len(spectra) > 1:
            labels = [f"{i}: {explore.spectrum_label(s)}" for i, s in enumerate(spectra)]
            names = ", ".join(u.name for u in uploaded)
            chosen = st.selectbox(f"{names} hold{'s' if len(uploaded) == 1 else ''} "
                                  f"{len(spectra)} spectra; pick one",
                                  range(len(spectra)), format_func=lambda i: labels[i],
                                  key=f"{key}_pick")
        ids = "+".join(str(u.file_id) for u in uploaded)
        set_query(spectra[chosen], f"upload:{ids}:{chosen}")
        return True
    if choice == "Bundled example":
        paths = explore.examples()
        if not paths:
            st.info("No bundled examples found in assets/examples.")
            return True
        path = st.selectbox("Example", paths, format_func=explore.example_title,
                            key=f"{key}_example")
        try:
            # the project's own file: read in-process (no upload worker to start)
            spectrum = explore.read_upload(Path(path).read_bytes(), Path(path).name,
                                           isolated=False)[0]
        except SpectrumError as err:
            show_read_error(err, Path(path).name)
            return False
        set_query(spectrum, f"example:{Path(path).name}")
        return True
    return _pick_indexed(index, key)


def _pick_indexed(index, key: str) -> bool:
    """An indexed spectrum by object id or sky position, or at random."""
    row = lookup_row(index, key, label="Object id, or a position: RA Dec in degrees "
                     "(150.1 2.2) or sexagesimal (10:00:24 +02:12:00)")
    if row is None:
        return st.session_state.get(f"{key}_lookup_failed") is not True
    set_query(index.spectrum(row), "index", row=int(row))
    return True


def _random_into(key: str, index, bright: bool) -> None:
    """Button callback: a random indexed spectrum's id into the lookup box."""
    row = explore.random_row_of(index, bright=bright)
    st.session_state[f"{key}_id"] = str(index.rows_metadata([row], ["object_id"])["object_id"].iloc[0])
    st.session_state[f"{key}_random_row"] = row


def _first_id(index) -> str:
    return str(index.rows_metadata([0], ["object_id"])["object_id"].iloc[0]) if len(index) else ""


def lookup_row(index, key: str, label: str, on_change=None) -> int | None:
    """The lookup box with Random / Random bright: the chosen index row, or None.

    An object id matches exactly; else the text is read as coordinates (astropy) and the
    spectra within 5″ are offered, nearest first. What could not be found is said.
    """
    left, middle, right = st.columns([4, 1, 1], vertical_alignment="bottom")
    with middle:
        st.button("Random", key=f"{key}_random", on_click=_random_into, args=(key, index, False),
                  help="any indexed spectrum", use_container_width=True)
    with right:
        st.button("Random bright", key=f"{key}_random_bright", on_click=_random_into,
                  args=(key, index, True), use_container_width=True,
                  help=f"among the {explore.BRIGHT_SHARE:.0%} of indexed spectra with the highest S/N")
    with left:
        wanted = st.text_input(label, key=f"{key}_id", on_change=on_change,
                               placeholder=_first_id(index))
    st.session_state[f"{key}_lookup_failed"] = False
    if not wanted or not wanted.strip():
        return None
    try:
        found = explore.lookup_in(index, wanted)
    except SpectrumError as err:
        st.warning(str(err))
        st.session_state[f"{key}_lookup_failed"] = True
        return None
    if not found.rows:
        st.warning(found.message)
        st.session_state[f"{key}_lookup_failed"] = True
        return None
    rows = found.rows
    preferred = st.session_state.get(f"{key}_random_row")
    if preferred in rows:  # Random picked this very row of an object observed several times
        rows = [preferred] + [r for r in rows if r != preferred]
    meta = index.rows_metadata(rows, ["survey", "object_id"]).set_axis(rows)  # the found rows only
    if len(rows) == 1:
        if found.kind == "position":
            st.caption(f"{found.message}: {meta['survey'].loc[rows[0]]} "
                       f"{meta['object_id'].loc[rows[0]]}")
        return int(rows[0])
    separation = dict(zip(found.rows, found.separations_arcsec))

    def describe(r: int) -> str:
        text = f"{meta['survey'].loc[r]} {meta['object_id'].loc[r]} (row {r})"
        return text + (f", {separation[r]:.1f}″ away" if r in separation else "")

    return int(st.selectbox(f"{found.message}; observed by" if found.kind == "id" else found.message,
                            rows, key=f"{key}_row", format_func=describe))


def neighbours_dataframe(table, key: str) -> None:
    """The neighbours table: a bar per similarity, archive links where the object has them."""
    config = {
        "similarity": st.column_config.ProgressColumn(
            "similarity", help="cosine similarity of the embeddings (1 = identical)",
            format="%.3f", min_value=0.0, max_value=1.0),
        "survey_page": st.column_config.LinkColumn(
            "survey page", help="the object in its survey's archive (SkyServer, Legacy viewer, "
            "Gaia archive), by position or source id", display_text=r"https?://(?:www\.)?([^/]+)/"),
        "simbad": st.column_config.LinkColumn("SIMBAD", help="SIMBAD objects within 5″",
                                              display_text="SIMBAD"),
    }
    # placeholder: a missing number (an SDSS galaxy's Teff) shows blank, not "None".
    st.dataframe(table, hide_index=True, key=key, column_config=config, placeholder="")


def describe_query() -> None:
    """A one-line summary of the current query and its facts."""
    q = query()
    facts = explore.spectrum_facts(q["spectrum"])
    warnings = facts.pop("warnings", [])
    st.caption(" · ".join(f"**{k}**: {v}" for k, v in facts.items()))
    meta = q["spectrum"].meta
    links = explore.survey_links(q["spectrum"].survey, meta.get("object_id"), meta.get("ra"),
                                 meta.get("dec"))
    if links:
        names = {"survey_page": "in its survey's archive", "simbad": "SIMBAD within 5″"}
        st.caption("This object: " + " · ".join(f"[{names[k]}]({url})" for k, url in links.items()))
    for warning in warnings:
        st.warning(f"The model may be out of its depth: {warning}")
    if q["spectrum"].meta.get("display_copy"):
        st.caption("An indexed spectrum's display copy: flux to ~3 digits, per-pixel errors "
                   "replaced by the median S/N.")
