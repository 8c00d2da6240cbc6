"""One table of common spectral lines, with VACUUM rest wavelengths in Å.

Used by the simulator (:mod:`spectok_core.data.astro`) to place lines and by
the app to mark them. Every wavelength here is vacuum, like every ``Spectrum``.

Sources, in order of preference:

* The SDSS spectral line table (vacuum; classic.sdss.org "Vacuum wavelengths of
  lines", also in idlspec2d) for the classic nebular and quasar lines — the
  values SDSS, BOSS and DESI redshifts are measured against.
* NIST Atomic Spectra Database (Kramida et al.) for hydrogen, helium and
  stellar metal lines; where NIST quotes air wavelengths (above 2000 Å) the
  value is written as ``_air(λ_air)`` and converted with the IAU standard
  (Morton 2000, :func:`spectok_core.spectrum.air_to_vacuum`).
* H band (APOGEE, 1.51-1.70 µm): atomic lines from Smith et al. 2013 (ApJ 765,
  16), Tables 2-5 (air, converted here), as collected in Bovy's ``apogee``
  package; Brackett lines as used by APOGEE (Chojnowski et al. 2015, AJ 149,
  7; they agree with the Rydberg formula to < 0.1 Å); 12CO and 13CO second
  overtone (Δv = 3) bandheads computed from the Dunham constants of the CO X
  state (Huber & Herzberg 1979; the same constants reproduce the 1-0 and 3-0
  band origins 2143.27 and 6350.44 cm⁻¹ and the 2-0 head at 22935 Å).
* Blends (C IV, Mg II, N V, ...) use the oscillator-strength-weighted centroid
  of Vanden Berk et al. 2001 (AJ 122, 549, Table 2), the wavelength a broad
  quasar line peaks at; the doublet components are listed separately where
  they are seen resolved (Mg II, Fe II absorption in galaxies and absorbers).

``accuracy`` says how well a position is known (Å): a few hundredths for
single atomic lines, more for blends, bands and bandheads, about 2 Å for the
OH and CN features, which stand for groups of molecular lines and whose
positions come from a plotting line list rather than a laboratory table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spectrum import air_to_vacuum

KINDS = ("emission", "absorption", "both")
OBJECTS = ("star", "galaxy", "qso")


def _air(wave_air: float) -> float:
    return float(air_to_vacuum(np.array([wave_air]))[0])


@dataclass(frozen=True)
class Line:
    """One line or feature: a unique ASCII ``name``, a display ``label``."""

    name: str
    label: str
    wave_vac: float  # Å, vacuum, rest frame
    kind: str  # "emission", "absorption" or "both"
    objects: tuple[str, ...]  # which of "star", "galaxy", "qso" show it
    species: str  # "H I", "O III", "Fe I", "CO", ...
    accuracy: float = 0.05  # Å
    note: str = ""


_S, _G, _Q = "star", "galaxy", "qso"
_SG, _GQ, _SGQ = (_S, _G), (_G, _Q), (_S, _G, _Q)


def _l(name, label, wave, kind, objects, species, accuracy=0.05, note=""):
    objects = (objects,) if isinstance(objects, str) else tuple(objects)
    return Line(name, label, round(float(wave), 3), kind, objects, species, accuracy, note)


_UV_AND_OPTICAL = [
    # -- ultraviolet: quasar broad lines and interstellar absorption (vacuum by convention)
    _l("Lyd", "Lyδ", 949.743, "both", _GQ, "H I", 0.01),
    _l("Lyg", "Lyγ", 972.537, "both", _GQ, "H I", 0.01),
    _l("Lyb", "Lyβ", 1025.722, "both", _GQ, "H I", 0.01),
    _l("OVI_1034", "O VI 1034", 1033.82, "emission", _Q, "O VI", 1.0, "blend 1031.93+1037.62"),
    _l("Lya", "Lyα", 1215.67, "both", _GQ, "H I", 0.01),
    _l("NV_1240", "N V 1240", 1240.81, "emission", _Q, "N V", 1.0, "blend 1238.82+1242.80"),
    _l("OI_1305", "O I 1305", 1305.53, "emission", _Q, "O I", 1.0, "blend of the 1302-1306 triplet"),
    _l("CII_1335", "C II 1335", 1335.31, "both", _GQ, "C II", 0.5, "blend 1334.53+1335.71"),
    _l("SiIV_1400", "Si IV+O IV] 1400", 1399.8, "emission", _Q, "Si IV", 2.0,
       "blend of Si IV 1393.76, 1402.77 and O IV] 1402"),
    _l("SiIV_1394", "Si IV 1394", 1393.76, "absorption", _GQ, "Si IV", 0.02),
    _l("SiIV_1403", "Si IV 1403", 1402.77, "absorption", _GQ, "Si IV", 0.02),
    _l("CIV_1549", "C IV 1549", 1549.06, "both", _GQ, "C IV", 0.5, "blend 1548.19+1550.77"),
    _l("HeII_1640", "He II 1640", 1640.42, "emission", _GQ, "He II", 0.1),
    _l("OIII]_1666", "O III] 1666", 1665.85, "emission", _Q, "O III", 0.5),
    _l("AlIII_1857", "Al III 1857", 1857.40, "emission", _Q, "Al III", 0.5, "blend 1854.72+1862.79"),
    _l("SiIII]_1892", "Si III] 1892", 1892.03, "emission", _Q, "Si III", 0.05),
    _l("CIII]_1909", "C III] 1909", 1908.73, "emission", _GQ, "C III", 0.05),
    _l("CII]_2326", "C II] 2326", 2326.44, "emission", _Q, "C II", 1.0, "multiplet"),
    _l("FeII_2344", "Fe II 2344", 2344.21, "absorption", _GQ, "Fe II", 0.01),
    _l("FeII_2383", "Fe II 2383", 2382.77, "absorption", _GQ, "Fe II", 0.01),
    _l("NeIV_2440", "[Ne IV] 2440", 2439.5, "emission", _Q, "Ne IV", 1.0, "blend"),
    _l("FeII_2587", "Fe II 2587", 2586.65, "absorption", _GQ, "Fe II", 0.01),
    _l("FeII_2600", "Fe II 2600", 2600.17, "absorption", _GQ, "Fe II", 0.01),
    _l("MgII_2799", "Mg II 2799", 2798.75, "emission", _Q, "Mg II", 0.5,
       "gf-weighted centroid of 2796.35+2803.53 (Vanden Berk 2001)"),
    _l("MgII_2796", "Mg II 2796", 2796.35, "absorption", _SGQ, "Mg II", 0.01),
    _l("MgII_2804", "Mg II 2804", 2803.53, "absorption", _SGQ, "Mg II", 0.01),
    _l("MgI_2853", "Mg I 2853", 2852.96, "absorption", _SGQ, "Mg I", 0.01),
    # -- optical, SDSS vacuum table unless converted from NIST air
    _l("NeV_3427", "[Ne V] 3427", 3426.85, "emission", _GQ, "Ne V", 0.1),
    _l("OII_3727", "[O II] 3727", 3727.09, "emission", _GQ, "O II", 0.02),
    _l("OII_3730", "[O II] 3730", 3729.88, "emission", _GQ, "O II", 0.02),
    _l("H10", "H10", 3798.98, "both", _SG, "H I", 0.02),
    _l("H9", "H9", 3836.47, "both", _SG, "H I", 0.02),
    _l("NeIII_3870", "[Ne III] 3870", 3869.86, "emission", _GQ, "Ne III", 0.02),
    _l("H8", "H8", 3890.15, "both", _SG, "H I", 0.02),
    _l("CaII_K", "Ca II K", 3934.78, "absorption", _SG, "Ca II", 0.02),
    _l("CaII_H", "Ca II H", 3969.59, "absorption", _SG, "Ca II", 0.02),
    _l("Heps", "Hε", 3971.20, "both", _SG, "H I", 0.02),
    _l("Hdelta", "Hδ", 4102.89, "both", _SGQ, "H I", 0.02),
    _l("CaI_4228", "Ca I 4228", _air(4226.73), "absorption", _SG, "Ca I", 0.02),
    _l("Gband", "G band (CH)", 4305.61, "absorption", _SG, "CH", 2.0, "molecular band centre"),
    _l("Hgamma", "Hγ", 4341.68, "both", _SGQ, "H I", 0.02),
    _l("OIII_4364", "[O III] 4364", 4364.44, "emission", _GQ, "O III", 0.02),
    _l("FeI_4385", "Fe I 4385", _air(4383.55), "absorption", _SG, "Fe I", 0.02),
    _l("HeI_4473", "He I 4473", _air(4471.48), "both", _SG, "He I", 0.05),
    _l("HeII_4687", "He II 4687", _air(4685.70), "both", _SGQ, "He II", 0.05),
    _l("Hbeta", "Hβ", 4862.68, "both", _SGQ, "H I", 0.02),
    _l("OIII_4960", "[O III] 4960", 4960.30, "emission", _GQ, "O III", 0.02),
    _l("OIII_5008", "[O III] 5008", 5008.24, "emission", _GQ, "O III", 0.02),
    _l("MgI_b4", "Mg I b4", _air(5167.32), "absorption", _SG, "Mg I", 0.02),
    _l("MgI_b2", "Mg I b2", _air(5172.68), "absorption", _SG, "Mg I", 0.02),
    _l("MgI_b1", "Mg I b1", _air(5183.60), "absorption", _SG, "Mg I", 0.02),
    _l("FeI_5271", "Fe I 5271", _air(5269.54), "absorption", _SG, "Fe I", 0.02),
    _l("HeI_5877", "He I 5877", _air(5875.62), "both", _SGQ, "He I", 0.05),
    _l("NaI_D2", "Na I D2", _air(5889.95), "absorption", _SG, "Na I", 0.02),
    _l("NaI_D1", "Na I D1", _air(5895.92), "absorption", _SG, "Na I", 0.02),
    _l("OI_6302", "[O I] 6302", 6302.05, "emission", _GQ, "O I", 0.02),
    _l("OI_6366", "[O I] 6366", 6365.54, "emission", _GQ, "O I", 0.02),
    _l("NII_6550", "[N II] 6550", 6549.86, "emission", _GQ, "N II", 0.02),
    _l("Halpha", "Hα", 6564.61, "both", _SGQ, "H I", 0.02),
    _l("NII_6585", "[N II] 6585", 6585.27, "emission", _GQ, "N II", 0.02),
    _l("HeI_6680", "He I 6680", _air(6678.15), "both", _SGQ, "He I", 0.05),
    _l("SII_6718", "[S II] 6718", 6718.29, "emission", _GQ, "S II", 0.02),
    _l("SII_6733", "[S II] 6733", 6732.67, "emission", _GQ, "S II", 0.02),
    _l("TiO_7055", "TiO 7055", _air(7053.0), "absorption", _S, "TiO", 2.0, "γ-system bandhead, M stars"),
    _l("HeI_7067", "He I 7067", _air(7065.19), "emission", _GQ, "He I", 0.05),
    _l("ArIII_7138", "[Ar III] 7138", _air(7135.79), "emission", _G, "Ar III", 0.05),
    _l("KI_7667", "K I 7667", _air(7664.90), "absorption", _S, "K I", 0.02),
    _l("KI_7701", "K I 7701", _air(7698.96), "absorption", _S, "K I", 0.02),
    _l("OI_7776", "O I 7776", _air(7774.17), "absorption", _S, "O I", 1.5, "triplet 7772-7775 (air)"),
    _l("OI_8449", "O I 8449", _air(8446.36), "emission", _Q, "O I", 0.5, "blend"),
    _l("CaII_8500", "Ca II 8500", _air(8498.02), "absorption", _SG, "Ca II", 0.02),
    _l("CaII_8544", "Ca II 8544", _air(8542.09), "absorption", _SG, "Ca II", 0.02),
    _l("CaII_8665", "Ca II 8665", _air(8662.14), "absorption", _SG, "Ca II", 0.02),
    _l("SIII_9071", "[S III] 9071", _air(9068.6), "emission", _G, "S III", 0.1),
    _l("SIII_9533", "[S III] 9533", _air(9530.6), "emission", _G, "S III", 0.1),
    # -- near infrared hydrogen and helium (NIST vacuum)
    _l("Paeps", "Paε", 9548.59, "both", _SGQ, "H I", 0.05),
    _l("Padelta", "Paδ", 10052.13, "both", _SGQ, "H I", 0.05),
    _l("HeI_10833", "He I 10833", 10833.31, "both", _SGQ, "He I", 0.1, "triplet 10832.06-10833.31"),
    _l("Pagamma", "Paγ", 10941.09, "both", _SGQ, "H I", 0.05),
    _l("Pabeta", "Paβ", 12821.59, "both", _SGQ, "H I", 0.05),
    _l("Paalpha", "Paα", 18756.13, "both", _SGQ, "H I", 0.05),
    _l("Brgamma", "Brγ", 21661.20, "both", _SGQ, "H I", 0.05),
]

# Brackett series in the APOGEE window (vacuum, Chojnowski et al. 2015); Br21
# from the Rydberg formula less the 0.06 Å fine-structure offset the others show.
_BRACKETT = {
    11: 16811.11, 12: 16411.67, 13: 16113.71, 14: 15884.88, 15: 15704.95, 16: 15560.70,
    17: 15443.14, 18: 15345.99, 19: 15264.71, 20: 15196.00, 21: 15137.36,
}

# H-band atomic lines, air wavelengths of Smith et al. 2013 (Tables 2-5).
_HBAND_AIR = {
    "Fe I": [15194.492, 15207.526, 15395.718, 15490.339, 15648.510, 15964.867, 16040.657,
             16153.247, 16165.032],
    "Mg I": [15740.716, 15748.9, 15765.8, 15879.5, 15886.2, 15954.477],
    "Al I": [16718.957, 16750.564, 16763.359],
    "Si I": [15361.161, 15376.831, 15833.602, 15960.063, 16060.009, 16094.787, 16215.670,
             16680.770, 16828.159],
    "K I": [15163.067, 15168.376],
    "Ca I": [16136.823, 16150.763, 16155.236, 16157.364],
    "Ti I": [15543.756, 15602.842, 15698.979, 15715.573, 16635.161],
    "Cr I": [15680.063, 15860.214],
    "Ni I": [15605.680, 15632.654, 16584.439, 16589.295, 16673.711, 16815.471, 16818.760],
}
# Given in vacuum by the same compilation (Shetrone; Cunha).
_HBAND_VAC = {"Fe I": [16697.635], "Na I": [16378.347, 16393.341]}
_HBAND_ACCURACY = {"Mg I": 0.3}  # 15748.9, 15765.8 are unresolved fine-structure blends

# Molecular features of cool stars. OH and CN stand for groups of lines; their
# positions (air, from the APOGEE plotting line list after Smith et al. 2013)
# are good to about 2 Å.
_OH_AIR = [15279.5, 15391.0, 15505.5, 15570.5]
_CN_AIR = [15260.0, 15322.0, 15332.0, 15397.0, 15410.0, 15447.0, 15466.0, 15472.0, 15482.0]


# Dunham constants of the CO X¹Σ⁺ state (cm⁻¹), Huber & Herzberg 1979; 13CO
# by isotopic scaling with ρ = sqrt(μ(12C16O)/μ(13C16O)).
_CO_12 = {"we": 2169.81358, "wexe": 13.28831, "weye": 0.010511, "Be": 1.93128087,
          "ae": 0.01750441, "ge": 5.487e-7, "De": 6.12147e-6}
_HC_OVER_K = 1.438777  # cm K


def _co_constants(isotope: str) -> dict[str, float]:
    if isotope == "12CO":
        return dict(_CO_12)
    if isotope != "13CO":
        raise ValueError(f"isotope must be '12CO' or '13CO', got {isotope!r}")
    mu12 = 12.0 * 15.994915 / (12.0 + 15.994915)
    mu13 = 13.003355 * 15.994915 / (13.003355 + 15.994915)
    rho = np.sqrt(mu12 / mu13)
    c = _CO_12
    return {"we": c["we"] * rho, "wexe": c["wexe"] * rho**2, "weye": c["weye"] * rho**3,
            "Be": c["Be"] * rho**2, "ae": c["ae"] * rho**3, "ge": c["ge"] * rho**4,
            "De": c["De"] * rho**4}


def co_band_lines(isotope: str = "12CO", temperature: float = 3500.0, heads_only: bool = False,
                  v_low_max: int = 7, j_max: int = 120):
    """Lines of the CO second overtone (Δv = 3) bands, vacuum Å.

    Returns ``(wave, strength)`` arrays: every R- and P-branch line of the bands
    v" = 0..v_low_max, with a relative strength from Boltzmann populations at
    ``temperature`` (vibrational and rotational), Hönl-London factors (J+1 for
    R, J for P) and a harmonic-oscillator scaling of the overtone transition
    moment, (v+1)(v+2)(v+3); the strongest line has strength 1. With
    ``heads_only`` it returns ``[(v_up, v_low, head_wave), ...]`` instead.
    """
    k = _co_constants(isotope)

    def vib(v):
        x = v + 0.5
        return k["we"] * x - k["wexe"] * x**2 + k["weye"] * x**3

    def rot(v, j):
        x = v + 0.5
        b = k["Be"] - k["ae"] * x + k["ge"] * x**2
        jj = j * (j + 1.0)
        return b * jj - k["De"] * jj**2

    j = np.arange(0, j_max + 1, dtype=np.float64)
    heads, waves, strengths = [], [], []
    for v_low in range(v_low_max + 1):
        v_up = v_low + 3
        origin = vib(v_up) - vib(v_low)
        r_branch = origin + rot(v_up, j + 1) - rot(v_low, j)
        p_branch = origin + rot(v_up, j[1:] - 1) - rot(v_low, j[1:])
        heads.append((v_up, v_low, 1e8 / float(r_branch.max())))
        if heads_only:
            continue
        band = (v_low + 1) * (v_low + 2) * (v_low + 3) / 6.0
        band *= np.exp(-_HC_OVER_K * (vib(v_low) - vib(0)) / temperature)
        pop_r = np.exp(-_HC_OVER_K * rot(v_low, j) / temperature)
        pop_p = np.exp(-_HC_OVER_K * rot(v_low, j[1:]) / temperature)
        waves += [1e8 / r_branch, 1e8 / p_branch]
        strengths += [band * (j + 1) * pop_r, band * j[1:] * pop_p]
    if heads_only:
        return heads
    wave = np.concatenate(waves)
    strength = np.concatenate(strengths)
    return wave, strength / strength.max()


def _co_heads(isotope: str) -> list[tuple[str, float]]:
    heads = co_band_lines(isotope, heads_only=True)
    return [(f"{v_up}-{v_low}", wave) for v_up, v_low, wave in heads if 15100 < wave < 17000]


def _hband() -> list[Line]:
    out = []
    for n, wave in _BRACKETT.items():
        out.append(_l(f"Br{n}", f"Br{n}", wave, "both", _SGQ, "H I", 0.05))
    for species, waves in _HBAND_AIR.items():
        for wave in waves:
            vac = _air(wave)
            out.append(_l(f"{species.replace(' ', '')}_{vac:.0f}", f"{species} {vac:.0f}", vac,
                          "absorption", _S, species, _HBAND_ACCURACY.get(species, 0.05)))
    for species, waves in _HBAND_VAC.items():
        for vac in waves:
            out.append(_l(f"{species.replace(' ', '')}_{vac:.0f}", f"{species} {vac:.0f}", vac,
                          "absorption", _S, species))
    for wave in _OH_AIR:
        vac = _air(wave)
        out.append(_l(f"OH_{vac:.0f}", f"OH {vac:.0f}", vac, "absorption", _S, "OH", 2.0,
                      "group of OH Δv=2 lines"))
    for wave in _CN_AIR:
        vac = _air(wave)
        out.append(_l(f"CN_{vac:.0f}", f"CN {vac:.0f}", vac, "absorption", _S, "CN", 2.0,
                      "group of CN red-system lines"))
    for isotope, tag in (("12CO", "12CO"), ("13CO", "13CO")):
        for band, wave in _co_heads(isotope):
            out.append(_l(f"{tag}_{band}", f"{tag} ({band}) head", wave, "absorption", _S,
                          isotope, 0.3, "R-branch bandhead; the band degrades to the red"))
    out.append(_l("DIB_15272", "DIB 15272", 15272.42, "absorption", _S, "ISM", 0.5,
                  "diffuse interstellar band (Zasowski et al. 2015)"))
    return out


LINES: tuple[Line, ...] = tuple(sorted(_UV_AND_OPTICAL + _hband(), key=lambda line: line.wave_vac))
_BY_NAME = {line.name: line for line in LINES}


def get(name: str) -> Line:
    """The line called ``name`` (e.g. ``"Halpha"``, ``"OIII_5008"``, ``"Br11"``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown line {name!r}; see spectok_core.lines.LINES") from None


def select(
    objects: str | None = None,
    kind: str | None = None,
    wave_min: float | None = None,
    wave_max: float | None = None,
    z: float = 0.0,
) -> list[Line]:
    """Lines an object type shows, of a kind, whose OBSERVED wavelength (at z) is in range.

    ``kind="emission"`` also returns lines of kind ``"both"``; likewise for absorption.
    """
    if objects is not None and objects not in OBJECTS:
        raise ValueError(f"objects must be one of {OBJECTS}, got {objects!r}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = []
    for line in LINES:
        observed = line.wave_vac * (1.0 + z)
        if objects is not None and objects not in line.objects:
            continue
        if kind is not None and line.kind not in (kind, "both"):
            continue
        if wave_min is not None and observed < wave_min:
            continue
        if wave_max is not None and observed > wave_max:
            continue
        out.append(line)
    return out
