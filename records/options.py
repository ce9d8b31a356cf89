"""What a conversion is asked to do (:class:`ConvertOptions`) and how it fails (:class:`ConvertError`).

The options fix the records' content and layout, never speed or logging; they are
checked when created. The plan's fingerprint is made from them
(:mod:`ifskeras.records.plan`), so a resume with other options is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ifskeras.survey.lines import DEFAULT_LINES, LineSelectionError, select_lines
from ifskeras.survey.maps import DAP_MASK_BITS, DEFAULT_REJECT_BITS
from ifskeras.survey.preprocess import DEFAULT_MIN_COVERAGE, MODES
from ifskeras.records.naming import check_dataset_name
from ifskeras.records.schema import RecordsError

__all__ = ["SCALES", "ConvertOptions", "ConvertError", "OutputExistsError", "ShardWriteError"]

#: What the grid spans: the IFU bundle, or a fixed number of effective radii.
SCALES = ("bundle", "re")


class ConvertError(RecordsError):
    """The conversion cannot start or cannot go on; the message says why and what to do."""


class OutputExistsError(ConvertError):
    """The output directory holds files and neither resume nor overwrite was asked for."""


class ShardWriteError(ConvertError):
    """Writing a shard or the journal, index or manifest failed (disk full, permissions); completed shards are kept."""


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that decides the records' content and layout (not speed or logging).

    Parameters
    ----------
    size : int
        Grid side S.
    mode : {'fit', 'pad'}
        See :mod:`ifskeras.survey.preprocess`.
    lines : sequence of str
        DAP channel names, stored in wavelength order.
    quantity, reject_bits :
        Passed to :func:`ifskeras.survey.maps.read_maps`.
    min_coverage : float
        ``fit`` mode: valid output pixels need this fraction of valid input area.
    val_fraction, test_fraction : float
        Split fractions, by a stable hash of the galaxy's MANGAID (its plate-IFU when
        the file has none), so repeat observations never straddle two splits.
    shard_mb : float
        Target shard size in MB (1e6 bytes, uncompressed estimate).
    min_shards : int
        At least this many shards per non-empty split (for input-pipeline sharding).
    compression : {None, 'gzip'}
    name : str
        Shard name prefix.
    labels : str, optional
        CSV with column ``plateifu`` and ``label_column``.
    num_workers, worker_index : int
        Convert only part ``worker_index`` of ``num_workers`` (cluster runs), joined
        afterwards with :func:`ifskeras.records.merge_records`.
    allow_mixed_releases : bool
        Accept inputs of several DAP releases (``VERSDAP``, ``DAPTYPE``) in one records
        directory. Refused by default: DR15 and DR17 fit the lines differently.
    scale : {'bundle', 're'}
        What the grid spans (``fit`` mode). ``bundle``: the covered square of the IFU
        bundle, so a galaxy's size on the grid follows how many effective radii its
        bundle reaches (1.5 or 2.5 in MaNGA's Primary and Secondary samples). ``re``:
        ``re_span`` effective radii centred on the galaxy (its OBJRA/OBJDEC through the
        maps' WCS), so every galaxy has one size on the grid and the bundle stops being a
        nuisance signal; the grid beyond the bundle is invalid.
    re_span : float
        ``scale='re'``: effective radii across the grid (3: out to 1.5 Re, the Primary
        sample's coverage).
    radii : str, optional
        ``scale='re'``: catalogue of effective radii by plate-IFU (DRPall, ``survey
        select`` sample, synthetic catalogue: :func:`ifskeras.survey.archive.read_effective_radii`).
        A galaxy missing from it fails with that reason.
    """

    size: int = 64
    mode: str = "fit"
    lines: tuple[str, ...] = DEFAULT_LINES
    quantity: str = "GFLUX"
    reject_bits: tuple[str, ...] = DEFAULT_REJECT_BITS
    min_coverage: float = DEFAULT_MIN_COVERAGE
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    shard_mb: float = 100.0
    min_shards: int = 1
    compression: str | None = None
    name: str = "maps"
    labels: str | None = None
    label_column: str = "class"
    num_workers: int = 1
    worker_index: int = 0
    allow_mixed_releases: bool = False
    scale: str = "bundle"
    re_span: float = 3.0
    radii: str | None = None

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConvertError(f"size must be a positive integer. Received: {self.size!r}")
        if self.mode not in MODES:
            raise ConvertError(f"mode must be one of {MODES}. Received: {self.mode!r}")
        try:
            lines = select_lines(list(self.lines))
        except LineSelectionError as error:
            raise ConvertError(str(error)) from None
        object.__setattr__(self, "lines", lines)
        unknown = [bit for bit in self.reject_bits if bit not in DAP_MASK_BITS]
        if unknown:
            raise ConvertError(f"unknown mask bits {unknown}; known: {sorted(DAP_MASK_BITS)}")
        object.__setattr__(self, "reject_bits", tuple(self.reject_bits))
        if not 0 < self.min_coverage <= 1:
            raise ConvertError(f"min_coverage must be in (0, 1]. Received: {self.min_coverage!r}")
        if not (self.val_fraction >= 0 and self.test_fraction >= 0 and self.val_fraction + self.test_fraction < 1):
            raise ConvertError(
                "need val_fraction >= 0, test_fraction >= 0 and val_fraction + test_fraction < 1. "
                f"Received: {self.val_fraction}, {self.test_fraction}"
            )
        if not self.shard_mb > 0:
            raise ConvertError(f"shard_mb must be > 0. Received: {self.shard_mb!r}")
        if self.min_shards < 1:
            raise ConvertError(f"min_shards must be >= 1. Received: {self.min_shards!r}")
        if self.compression not in (None, "gzip"):
            raise ConvertError(f"compression must be None or 'gzip'. Received: {self.compression!r}")
        try:
            check_dataset_name(self.name)
        except ValueError as error:
            raise ConvertError(str(error)) from None
        if self.num_workers < 1 or not 0 <= self.worker_index < self.num_workers:
            raise ConvertError(
                "need num_workers >= 1 and 0 <= worker_index < num_workers. "
                f"Received: num_workers={self.num_workers}, worker_index={self.worker_index}"
            )

        if self.scale not in SCALES:
            raise ConvertError(f"scale must be one of {SCALES}. Received: {self.scale!r}")
        if self.radii and self.scale != "re":
            raise ConvertError("a catalogue of effective radii is used only with scale 're' (--scale re); "
                               f"with scale {self.scale!r} the grid spans the bundle")
        if self.scale == "re":
            if self.mode != "fit":
                raise ConvertError("scale 're' resamples the maps: it needs mode 'fit'")
            if not self.radii:
                raise ConvertError("scale 're' needs a catalogue of effective radii (radii=, --radii DRPALL)")
            if not (isinstance(self.re_span, (int, float)) and math.isfinite(self.re_span) and self.re_span > 0):
                raise ConvertError(f"re_span must be a number > 0. Received: {self.re_span!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.lines), self.size, self.size)
