"""The explorer's library layer: everything the Streamlit pages compute, none of the layout.

The app (``app/``) only arranges widgets; what it shows comes from here, so every number
on a page can be tested without a browser. One module per concern:

* :mod:`.uploads` — reading uploads (size limits, the isolated parse, DESI catalogue pairing,
  error text), writing a spectrum as CSV;
* :mod:`.resources` — where the model, index and examples live; warm-up; credits, model card;
* :mod:`.search` — the index search from the page's filters, the neighbours table, CSV and links;
* :mod:`.estimates` — neighbour estimates and the gates that withhold them;
* :mod:`.lookup` — finding an indexed spectrum by position or object id, random picks;
* :mod:`.figures` — spectrum plots (lines, smoothing, noise, neighbours stacked or overlaid);
* :mod:`.atlas` — the map; :mod:`.reconstruct` — residuals and other instruments' grids;
  :mod:`.teaching` — the How-it-works figures.

Everything is re-exported here: pages and tests write ``explore.X``. Plotly and torch are
imported inside the functions that need them, so importing this package stays cheap.

Paths: the model and index come from ``SPECTOK_MODEL`` / ``SPECTOK_INDEX`` when set (tests
point them at tiny ones), else the shipped defaults.
"""

from __future__ import annotations

from .atlas import (
    MAP_POINTS,
    index_contents,
    index_contents_of,
    index_values,
    map_density,
    map_figure,
    map_frame,
    map_points_limit,
    map_sample,
    selected_row,
)
from .common import (
    CATEGORICAL,
    CLASS_OBJECTS,
    CONTINUOUS,
    EXAMPLES_DIR,
    INDEX_ENV,
    LABELS,
    MODEL_ENV,
    REPO_ROOT,
    SHIPPED_MODEL,
    STRONG_LINES,
    as_float,
    spectrum_facts,
    spectrum_label,
)
from .estimates import (
    AGREE,
    LOW_SNR,
    MAX_SPREAD,
    MIN_AGREEING,
    MIN_CLASS_SHARE,
    MIN_SIMILARITY,
    NO_ESTIMATE,
    OUT_OF_RANGE_SIMILARITY,
    Estimate,
    against_file,
    estimate_warnings,
    estimates_lines,
    estimates_table,
    gated_estimates,
    neighbour_estimates,
)
from .figures import (
    _thin,
    break_gaps,
    coverage_figure,
    flux_unit_label,
    frame_redshift,
    label_rows,
    line_markers,
    median_normalised,
    neighbours_figure,
    noise_sigma,
    overlay_figure,
    reconstruction_figure,
    redshift_slider_range,
    rendering_figure,
    rest_frame,
    smooth,
    spectrum_figure,
)
from .lookup import (
    BRIGHT_SHARE,
    RADIUS_ARCSEC,
    Lookup,
    lookup,
    lookup_in,
    parse_position,
    random_row,
    random_row_of,
)
from .reconstruct import (
    overlap,
    render_on,
    rendering_instruments,
    residual_summary,
    residuals_sigma,
)
from .resources import (
    credits,
    example_title,
    examples,
    index_path,
    load_index,
    load_tokenizer,
    model_card,
    model_card_parts,
    model_path,
    warm_up,
)
from .search import (
    CSV_FIRST,
    HIT_COLUMNS,
    hits_table,
    neighbour_label,
    neighbours,
    neighbours_csv,
    survey_links,
    where_filter,
)
from .teaching import (
    embedding_figure,
    encoding_figure,
    patch_pixels_figure,
    patches_figure,
    tokens_figure,
)
from .uploads import (
    formats_help,
    formats_table,
    read_upload,
    read_uploads,
    split_error,
    upload_limit_bytes,
    write_csv,
)

__all__ = [
    "AGREE", "as_float", "break_gaps", "BRIGHT_SHARE", "CATEGORICAL", "CLASS_OBJECTS",
    "CONTINUOUS", "coverage_figure", "credits", "CSV_FIRST", "embedding_figure", "encoding_figure",
    "Estimate", "against_file", "estimate_warnings", "estimates_lines", "estimates_table", "example_title", "examples",
    "EXAMPLES_DIR", "flux_unit_label", "formats_help", "formats_table", "frame_redshift",
    "gated_estimates", "HIT_COLUMNS", "hits_table", "index_contents", "INDEX_ENV", "index_path",
    "MAP_POINTS", "map_density", "map_points_limit", "map_sample", "index_contents_of", "index_values",
    "lookup_in", "random_row_of",
    "label_rows", "LABELS", "line_markers", "load_index", "load_tokenizer", "Lookup", "lookup",
    "LOW_SNR", "map_figure", "map_frame", "MAX_SPREAD", "median_normalised", "MIN_AGREEING",
    "MIN_CLASS_SHARE", "MIN_SIMILARITY", "model_card", "model_card_parts", "MODEL_ENV", "model_path",
    "neighbour_estimates", "neighbour_label", "neighbours", "neighbours_csv", "neighbours_figure",
    "NO_ESTIMATE", "noise_sigma", "OUT_OF_RANGE_SIMILARITY", "overlap", "overlay_figure",
    "parse_position", "patch_pixels_figure", "patches_figure", "RADIUS_ARCSEC", "random_row",
    "read_upload", "read_uploads", "reconstruction_figure", "redshift_slider_range", "render_on", "rendering_figure",
    "rendering_instruments", "REPO_ROOT", "residual_summary", "residuals_sigma", "rest_frame",
    "selected_row", "SHIPPED_MODEL", "smooth", "spectrum_facts", "spectrum_figure",
    "spectrum_label", "split_error", "STRONG_LINES", "survey_links", "_thin", "tokens_figure",
    "upload_limit_bytes", "warm_up", "where_filter", "write_csv",
]
