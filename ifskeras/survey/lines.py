"""Emission-line catalogue of the MaNGA Data Analysis Pipeline (DAP).

Channel names are those written in the ``C01..Cnn`` header keys of the DAP
``EMLINE_*`` extensions; wavelengths are vacuum rest wavelengths in Angstrom as
listed in the DAP emission-line parameter files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "DR15_LINES",
    "DR17_LINES",
    "DEFAULT_LINES",
    "PAPER_WAVELENGTH_RANGE",
    "LineSelectionError",
    "wavelength_of",
    "select_lines",
    "pretty_line_name",
    "TIED_LINES",
    "tied_lines_among",
]

#: Vacuum rest wavelengths (Angstrom) of every channel in the DAP line lists below.
_VACUUM_WAVELENGTHS: Mapping[str, float] = {
    "OII-3727": 3727.092, "OII-3729": 3729.875, "H12-3751": 3751.217, "H11-3771": 3771.701,
    "Hthe-3798": 3798.976, "Heta-3836": 3836.472, "NeIII-3869": 3869.86, "HeI-3889": 3889.749,
    "Hzet-3890": 3890.151, "NeIII-3968": 3968.59, "Heps-3971": 3971.195, "Hdel-4102": 4102.892,
    "Hgam-4341": 4341.684, "HeII-4687": 4687.015, "Hb-4862": 4862.683, "OIII-4960": 4960.295,
    "OIII-5008": 5008.240, "NI-5199": 5199.349, "NI-5201": 5201.705, "HeI-5877": 5877.243,
    "OI-6302": 6302.046, "OI-6365": 6365.535, "NII-6549": 6549.86, "Ha-6564": 6564.608,
    "NII-6585": 6585.27, "SII-6718": 6718.295, "SII-6732": 6732.674, "HeI-7067": 7067.138,
    "ArIII-7137": 7137.76, "ArIII-7753": 7753.24, "Peta-9017": 9017.385, "SIII-9071": 9071.1,
    "Pzet-9231": 9231.547, "SIII-9533": 9533.2, "Peps-9548": 9548.588,
}

#: The 22 channels of DR15-era DAP MAPS files (DRP v2_4_3, DAP 2.2), in file order.
DR15_LINES: Mapping[str, float] = {
    name: _VACUUM_WAVELENGTHS[name]
    for name in (
        "OII-3727", "OII-3729", "Hthe-3798", "Heta-3836", "NeIII-3869", "Hzet-3890", "NeIII-3968",
        "Heps-3971", "Hdel-4102", "Hgam-4341", "HeII-4687", "Hb-4862", "OIII-4960", "OIII-5008",
        "HeI-5877", "OI-6302", "OI-6365", "NII-6549", "Ha-6564", "NII-6585", "SII-6718", "SII-6732",
    )
}

#: The 35 channels of DR17 DAP MAPS files (DAP 3.1, ELPMPL11), in file order.
DR17_LINES: Mapping[str, float] = dict(_VACUUM_WAVELENGTHS)

#: Wavelength window of the paper (arXiv 2602.18426), Angstrom, exclusive.
PAPER_WAVELENGTH_RANGE = (3800.0, 8000.0)

#: The paper's 19 lines: the DR15 list restricted to 3800 < lambda < 8000 A,
#: ordered by wavelength (the order the ConvLSTM reads them in).
DEFAULT_LINES: tuple[str, ...] = tuple(
    name
    for name, wave in sorted(DR15_LINES.items(), key=lambda item: item[1])
    if PAPER_WAVELENGTH_RANGE[0] < wave < PAPER_WAVELENGTH_RANGE[1]
)

_ALL_LINES = _VACUUM_WAVELENGTHS
_PRETTY_IONS = {
    "Ha": "H\u03b1", "Hb": "H\u03b2", "Hgam": "H\u03b3", "Hdel": "H\u03b4",
    "Heps": "H\u03b5", "Hzet": "H\u03b6", "Heta": "H\u03b7", "Hthe": "H\u03b8",
    "Peta": "P\u03b7", "Pzet": "P\u03b6", "Peps": "P\u03b5",
}
# Forbidden lines are written in square brackets by astronomers.
_FORBIDDEN = {"OII", "OIII", "NII", "SII", "OI", "NeIII", "NI", "ArIII", "SIII"}


class LineSelectionError(ValueError):
    """A requested line is not in the catalogue or the selection is empty."""


def wavelength_of(name: str) -> float:
    """Vacuum rest wavelength in Angstrom of a DAP channel name (case-insensitive)."""
    canonical = _canonical(name)
    return _ALL_LINES[canonical]


def select_lines(
    names: Iterable[str] | None = None,
    *,
    wavelength_range: tuple[float, float] | None = None,
    catalogue: Mapping[str, float] = DR15_LINES,
) -> tuple[str, ...]:
    """Choose lines by name or by an exclusive wavelength range, sorted by wavelength.

    Parameters
    ----------
    names : iterable of str, optional
        DAP channel names, matched case-insensitively against both catalogues.
    wavelength_range : (float, float), optional
        Keep lines of ``catalogue`` with ``lo < lambda < hi`` (Angstrom).
    catalogue : mapping
        The line list used for ``wavelength_range``; DR15's 22 lines by default.

    Examples
    --------
    >>> select_lines(["ha-6564", "Hb-4862"])
    ('Hb-4862', 'Ha-6564')
    >>> len(select_lines(wavelength_range=(3800, 8000)))
    19
    """
    if names is None and wavelength_range is None:
        return DEFAULT_LINES
    chosen: list[str] = []
    if names is not None:
        chosen.extend(_canonical(name) for name in names)
    if wavelength_range is not None:
        lo, hi = wavelength_range
        if not lo < hi:
            raise LineSelectionError(
                f"Wavelength range must have lo < hi. Received: {wavelength_range}"
            )
        chosen.extend(name for name, wave in catalogue.items() if lo < wave < hi)
    unique = sorted(set(chosen), key=lambda name: _ALL_LINES[name])
    if not unique:
        raise LineSelectionError(
            f"No lines selected. Received: names={names}, wavelength_range={wavelength_range}"
        )
    return tuple(unique)


def pretty_line_name(name: str) -> str:
    """Line name as astronomers write it, e.g. ``'[OIII] 5008'`` or ``'H\u03b1 6564'``."""
    ion, _, wave = _canonical(name).partition("-")
    if ion in _PRETTY_IONS:
        return f"{_PRETTY_IONS[ion]} {wave}"
    if ion in _FORBIDDEN:
        return f"[{ion}] {wave}"
    return f"{ion} {wave}"


def _canonical(name: str) -> str:
    lookup = {known.lower(): known for known in _ALL_LINES}
    try:
        return lookup[name.strip().lower()]
    except KeyError:
        raise LineSelectionError(
            f"Unknown emission line {name!r}. Known lines: {', '.join(_ALL_LINES)}"
        ) from None


#: DAP lines fitted as fixed multiples of a stronger partner (copy -> partner): on real
#: DR15 files [OIII]4960/5008 = 0.340, [NII]6549/6585 = 0.327, [OI]6365/6302 = 0.328,
#: pixel by pixel. A copy carries no information of its own, so a galaxy-level score
#: that counts it weighs its partner's errors twice.
TIED_LINES = {"OIII-4960": "OIII-5008", "NII-6549": "NII-6585", "OI-6365": "OI-6302"}


def tied_lines_among(lines) -> dict[str, str]:
    """The pairs of :data:`TIED_LINES` whose copy and partner are both among ``lines``."""
    lines = set(lines)
    return {copy: partner for copy, partner in TIED_LINES.items() if copy in lines and partner in lines}
