"""A conversion's plan, fixed before any galaxy is converted.

Made from the header scan (:func:`ifskeras.records.inputs.peek_identity`, threads), the
plan fixes:

- **releases**: inputs of several DAP releases (``VERSDAP`` series major.minor, ``DAPTYPE``) are refused
  unless ``allow_mixed_releases``, before anything is written;
- **galaxies**: files sharing a plate-IFU (copies) or a MANGAID (repeat observations)
  are one galaxy, converted once. Its files are ordered as *candidates*: observations by
  IFU bundle size (largest first), then plate-IFU; copies of one observation by path.
  The worker converts the first candidate that converts; later ones are fallbacks, so a
  damaged file never displaces a readable copy or observation;
- the galaxy's **key**, its MANGAID (else its plate-IFU), which places it: cluster part
  (``part_of``), split (``split_of``) and order within the split;
- the number of shards per split (from the estimated record size and ``shard_mb``) and
  which galaxies go in which shard (sorted by the key's hash, cut into equal runs).

The same inputs and options always give the same plan, and its fingerprint (written
first in the journal, candidates included) is how a resume checks that it continues
the same conversion.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from ifskeras.records.inputs import HeaderIdentity, _identify
from ifskeras.records.naming import SPLITS, part_of, shard_filename, split_of, stable_fraction
from ifskeras.records.options import ConvertError, ConvertOptions
from ifskeras.records.schema import SCHEMA_VERSION, release_series, release_text

#: Protobuf keys, id, label, ra, dec and TFRecord framing, per example (bytes).
_RECORD_OVERHEAD = 256
_PEEK_THREADS = 8
#: Example files named per release when mixed releases are refused.
_RELEASE_EXAMPLES = 3


class _Candidate(NamedTuple):
    """One file that can give a galaxy's record."""

    path: str
    plateifu: str
    versdap: str
    daptype: str
    label: str = ""  # the labels CSV's value for this plate-IFU, if any
    re_arcsec: float = 0.0  # effective radius from ``options.radii`` (scale 're'); 0: unknown


class _Galaxy(NamedTuple):
    """One galaxy to convert: its key (MANGAID, else plate-IFU) and its files, best first."""

    key: str
    mangaid: str
    label: str
    candidates: tuple[_Candidate, ...]


@dataclass
class _Shard:
    split: str
    file: str
    items: list[_Galaxy]


@dataclass
class _Plan:
    shards: list[_Shard]
    failures: list[dict]
    #: (versdap, daptype) of this part's files, sorted.
    releases: list[tuple[str, str]]
    inputs: int
    fingerprint: str = ""
    extras: dict = field(default_factory=dict)


def bundle_fibres(plateifu: str, ifudsgn: str = "") -> int:
    """Fibres of the IFU bundle: the IFU design without its last two digits (12705 -> 127, 3701 -> 37).

    The design is ``ifudsgn`` (the IFUDSGN card) or else the IFU part of the plate-IFU;
    0 when neither is a number.
    """
    design = ifudsgn.strip() or plateifu.rpartition("-")[2].strip()
    return int(design) // 100 if design.isdigit() else 0


def _make_plan(paths: list[Path], input_problems: list[dict], options: ConvertOptions,
               labels: dict[str, str], radii: dict[str, float] | None = None) -> _Plan:
    with ThreadPoolExecutor(_PEEK_THREADS) as pool:
        identities = list(pool.map(lambda path: _identify(path, options), paths))
    readable = [(str(path), identity) for path, (identity, _) in zip(paths, identities) if identity is not None]
    # Every part of a cluster run checks all inputs, so every part refuses alike.
    _check_releases(readable, options)

    mine = (lambda key: part_of(key, options.num_workers) == options.worker_index)
    failures = [{**problem, "replaced_by": ""} for problem in input_problems if mine(Path(problem["path"]).name)]
    failures += [{"path": str(path), "reason": reason, "replaced_by": ""}
                 for path, (identity, reason) in zip(paths, identities) if identity is None and mine(path.name)]
    members = {split: [] for split in SPLITS}
    for galaxy in _group_galaxies(readable, labels, radii or {}):
        if mine(galaxy.key):
            members[split_of(galaxy.key, options.val_fraction, options.test_fraction)].append(galaxy)

    record_bytes = math.prod(options.shape) * 9 + _RECORD_OVERHEAD
    shard_bytes = options.shard_mb * 1e6
    shards = []
    for split in SPLITS:
        items = sorted(members[split], key=lambda galaxy: (stable_fraction(galaxy.key, "shard"), galaxy.key))
        count = len(items)
        if count == 0:
            continue
        n_shards = min(count, max(options.min_shards, math.ceil(count * record_bytes / shard_bytes)))
        for index in range(n_shards):
            chunk = items[index * count // n_shards:(index + 1) * count // n_shards]
            shards.append(_Shard(split, shard_filename(options.name, split, index, n_shards), chunk))
    candidates = [candidate for shard in shards for galaxy in shard.items for candidate in galaxy.candidates]
    plan = _Plan(
        shards=shards,
        failures=failures,
        releases=sorted({(candidate.versdap, candidate.daptype) for candidate in candidates}),
        inputs=len(candidates) + len(failures),
    )
    plan.fingerprint = hashlib.sha256(
        json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "options": _options_record(options),
                "shards": [[shard.file, shard.items] for shard in shards],
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return plan


def _group_galaxies(files: list[tuple[str, HeaderIdentity]], labels: dict[str, str],
                    radii: dict[str, float] | None = None) -> list[_Galaxy]:
    """Files that share a plate-IFU or a MANGAID, as galaxies with their candidates in order.

    ``files`` are in sorted path order. Galaxies come out in the order of their first file.
    """
    parent = list(range(len(files)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first_with: dict[tuple[str, str], int] = {}
    for index, (_, identity) in enumerate(files):
        links = [("plateifu", identity.plateifu)] + ([("mangaid", identity.mangaid)] if identity.mangaid else [])
        for link in links:
            other = first_with.setdefault(link, index)
            parent[root(index)] = root(other)

    groups: dict[int, list[int]] = {}
    for index in range(len(files)):
        groups.setdefault(root(index), []).append(index)
    galaxies = []
    for members in groups.values():
        fibres: dict[str, int] = {}
        for index in members:
            identity = files[index][1]
            fibres[identity.plateifu] = max(fibres.get(identity.plateifu, 0),
                                            bundle_fibres(identity.plateifu, identity.ifudsgn))
        order = sorted(members, key=lambda i: (-fibres[files[i][1].plateifu], files[i][1].plateifu, files[i][0]))
        radii = radii or {}
        # A galaxy has one effective radius: an observation the catalogue does not list (e.g. a
        # repeat left out of a `survey select` sample) takes that of another observation.
        galaxy_radius = next((radii[files[i][1].plateifu] for i in order if files[i][1].plateifu in radii), 0.0)
        candidates = tuple(
            _Candidate(files[i][0], files[i][1].plateifu, files[i][1].versdap, files[i][1].daptype,
                       labels.get(files[i][1].plateifu, ""), radii.get(files[i][1].plateifu, galaxy_radius))
            for i in order
        )
        mangaid = next((files[i][1].mangaid for i in order if files[i][1].mangaid), "")
        label = next((labels[c.plateifu] for c in candidates if labels.get(c.plateifu)), "")
        galaxies.append(_Galaxy(mangaid or candidates[0].plateifu, mangaid, label, candidates))
    return galaxies


def _check_releases(files: list[tuple[str, HeaderIdentity]], options: ConvertOptions) -> None:
    """Refuse inputs of several DAP releases unless ``options.allow_mixed_releases``."""
    by_release: dict[tuple[str, str], list[str]] = {}
    versions: dict[tuple[str, str], set[str]] = {}
    for path, identity in files:
        series = release_series(identity.versdap, identity.daptype)
        by_release.setdefault(series, []).append(path)
        versions.setdefault(series, set()).add(identity.versdap)
    if len(by_release) < 2 or options.allow_mixed_releases:
        return
    found = "; ".join(
        f"{release_text('/'.join(sorted(versions[release])), release[1])}: {len(paths)} file(s), "
        f"e.g. {', '.join(paths[:_RELEASE_EXAMPLES])}"
        for release, paths in sorted(by_release.items())
    )
    raise ConvertError(
        f"the inputs mix {len(by_release)} DAP releases ({found}). DR15 and DR17 fit the lines differently: "
        "convert each release into its own records directory, or pass --allow-mixed-releases "
        "(ConvertOptions(allow_mixed_releases=True)) to keep them together"
    )


def _options_record(options: ConvertOptions) -> dict:
    record = asdict(options)
    record["lines"] = list(options.lines)
    record["reject_bits"] = list(options.reject_bits)
    return record
