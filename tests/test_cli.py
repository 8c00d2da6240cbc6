"""The command line's quick-look plot: written whole, one panel per spectrum."""

import matplotlib.image
import numpy as np

from spectok_core.cli import main


def test_inspect_writes_a_quicklook_png(tmp_path, capsys):
    wave = np.linspace(3800.0, 9000.0, 2000)
    flux = 1.0 + 0.3 * np.exp(-0.5 * ((wave - 6565.0) / 4.0) ** 2)
    table = tmp_path / "star.csv"
    table.write_text("wavelength,flux\n" + "\n".join(f"{w:.3f},{f:.5f}" for w, f in zip(wave, flux)))
    out = tmp_path / "plots" / "quicklook.png"
    assert main(["inspect", str(table), "--plot", str(out)]) == 0
    assert "quick-look plot written" in capsys.readouterr().out
    image = matplotlib.image.imread(out)
    assert image.shape[1] == 1100 and image.shape[0] > 200  # 10 in wide at 110 dpi, one panel
    assert not list(out.parent.glob("*.part"))  # nothing half-written left behind


def test_train_config_choices_are_the_model_presets():
    from spectok_core.cli import PRESET_NAMES
    from spectok_core.model.config import PRESETS

    assert set(PRESET_NAMES) == set(PRESETS)
