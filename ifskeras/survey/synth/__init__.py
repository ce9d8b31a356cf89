"""Synthetic MaNGA-like surveys written as DAP MAPS files.

Each synthetic galaxy is a set of emission-line maps built from physically consistent
components: an exponential disc with spiral arms and star-forming clumps, an AGN narrow-line
region blurred by the point-spread function, extended low-ionisation emission following the
stars, or a compact starburst. Line ratios sit in the right regions of the BPT diagrams
(Kauffmann et al. 2003; Kewley et al. 2001, 2006), Balmer lines follow case B recombination
and are reddened by the Cardelli, Clayton & Mathis (1989) extinction law, and the doublets the
DAP ties in its fits keep their fixed ratios. Surface brightness and noise are calibrated
against two real DR15 MAPS files (a bright star-forming galaxy and a faint one): the written
inverse variance is the variance the noise was drawn from, and fluxes are clipped at zero as
the DAP's Gaussian fits are.

Files carry the three ``EMLINE_GFLUX`` extensions of the DAP format with the survey's names
and header keys, so :func:`ifskeras.survey.maps.read_maps` reads them exactly like real ones.

Two variants (:data:`VARIANTS`; :data:`DEFAULT_VARIANT` is ``classic``): ``classic`` is the
survey above, whose files never change for a seed; ``realistic`` makes the anomaly ranking
work harder and looks more like MaNGA: one Halpha brightness distribution for the
line-emitting classes, the DAP's tied doublet ratios, noise correlated between neighbouring
spaxels, diffuse ionised gas in discs, weak and off-centre AGN, bars, thin edge-on discs,
close companions and 28% retired galaxies. Realistic files name their variant in the
``SYNTHVAR`` header card (:func:`file_variant`).

Modules, in the order data flows through them:

- :mod:`~ifskeras.survey.synth.physics`: ionisation states per class, line fluxes (case B,
  doublets), dust extinction;
- :mod:`~ifskeras.survey.synth.morphology`: disc geometry, surface brightness and where each
  class's emission sits;
- :mod:`~ifskeras.survey.synth.instrument`: IFU bundles, PSF, noise and the DAP mask;
- :mod:`~ifskeras.survey.synth.galaxy`: :func:`make_galaxy`, one galaxy in memory;
- :mod:`~ifskeras.survey.synth.dapfile`: :func:`write_maps_file`, one galaxy as a MAPS file;
- :mod:`~ifskeras.survey.synth.survey`: :func:`make_survey`, the files and the catalogue.

Examples
--------
>>> import numpy as np
>>> galaxy = make_galaxy(np.random.default_rng(1), "Seyfert", ifu_fibres=19)
>>> galaxy.flux.shape
(22, 32, 32)
>>> summary = make_survey("synthetic-survey", 20, seed=1)  # doctest: +SKIP
>>> summary.counts["SF"]  # doctest: +SKIP
12
>>> harder = make_survey("realistic-survey", 20, seed=1, variant="realistic")  # doctest: +SKIP
"""

from __future__ import annotations

from ifskeras.survey.synth.dapfile import SYNTH_VERSION, VARIANT_CARD, file_variant, maps_file_name, write_maps_file
from ifskeras.survey.synth.galaxy import (
    CLASSES,
    DEFAULT_VARIANT,
    VARIANTS,
    SyntheticGalaxy,
    effective_radius_spaxels,
    make_galaxy,
)
from ifskeras.survey.synth.instrument import IFU_MAP_SIZES, PLATE_IFU_FIBRES, PSF_FWHM_SPAXELS
from ifskeras.survey.synth.physics import CASE_B_BALMER, CLASSIC_DOUBLET_RATIOS, DAP_TIED_LINES, DOUBLET_RATIOS
from ifskeras.survey.synth.survey import (
    CATALOG_COLUMNS,
    DEFAULT_CLASS_FRACTIONS,
    REALISTIC_CATALOG_COLUMNS,
    REALISTIC_CLASS_FRACTIONS,
    SurveyExistsError,
    SurveySummary,
    catalog_columns,
    class_counts,
    default_class_fractions,
    existing_survey_files,
    make_survey,
    parse_class_fractions,
)

__all__ = [
    "CLASSES",
    "VARIANTS",
    "DEFAULT_VARIANT",
    "DEFAULT_CLASS_FRACTIONS",
    "REALISTIC_CLASS_FRACTIONS",
    "IFU_MAP_SIZES",
    "PLATE_IFU_FIBRES",
    "CASE_B_BALMER",
    "DOUBLET_RATIOS",
    "CLASSIC_DOUBLET_RATIOS",
    "DAP_TIED_LINES",
    "PSF_FWHM_SPAXELS",
    "SYNTH_VERSION",
    "VARIANT_CARD",
    "CATALOG_COLUMNS",
    "REALISTIC_CATALOG_COLUMNS",
    "SurveyExistsError",
    "SyntheticGalaxy",
    "SurveySummary",
    "make_galaxy",
    "effective_radius_spaxels",
    "write_maps_file",
    "make_survey",
    "maps_file_name",
    "file_variant",
    "parse_class_fractions",
    "class_counts",
    "default_class_fractions",
    "catalog_columns",
    "existing_survey_files",
]
