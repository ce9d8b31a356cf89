"""Join records directories (e.g. the parts of a cluster conversion) into one dataset.

Shard contents never change, so their checksums carry over; only names are
renumbered: the shards of each split are concatenated in part order (worker index,
then directory name) and renamed ``{name}-{split}.tfrecord-{j:05d}-of-{N:05d}``.
Parts of different DAP releases are refused unless ``allow_mixed_releases``, as in
:func:`ifskeras.records.convert_maps`.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from ifskeras import __version__
from ifskeras.common.files import atomic_write_csv, atomic_write_json, fsync_dir, fsync_path, sha256_file
from ifskeras.records.naming import SPLITS, TEMP_SUFFIX, shard_filename
from ifskeras.records.schema import (
    DUPLICATES_COLUMNS,
    DUPLICATES_NAME,
    FAILURES_COLUMNS,
    FAILURES_NAME,
    INDEX_COLUMNS,
    INDEX_NAME,
    MANIFEST_NAME,
    RecordsError,
    load_manifest,
    read_index,
    release_series,
    release_text,
)

__all__ = ["MergeError", "merge_records", "TRANSFER_MODES"]

TRANSFER_MODES = ("link", "copy", "move")
#: Manifest fields that must agree between parts.
_MUST_AGREE = ("schema_version", "name", "lines", "shape", "preprocessing", "compression", "split_rule")


class MergeError(RecordsError):
    """The directories cannot be joined (incompatible, overlapping or incomplete)."""


def merge_records(
    parts: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    transfer: str = "link",
    allow_partial: bool = False,
    allow_mixed_releases: bool = False,
) -> dict:
    """Join records directories into ``out_dir``; returns the new manifest.

    Parameters
    ----------
    parts : sequence of path-like
        Records directories with compatible manifests (same lines, shape,
        preprocessing, compression and split rule) and disjoint ids.
    out_dir : path-like
        Must be empty or absent.
    transfer : {'link', 'copy', 'move'}
        Hard-link shards (falls back to copying across file systems), copy, or move.
    allow_partial : bool
        Join parts of a cluster conversion even if some worker indices are absent.
    allow_mixed_releases : bool
        Join parts whose inputs are of different DAP releases (``VERSDAP``, ``DAPTYPE``).

    Raises
    ------
    MergeError
        Incompatible manifests, different DAP releases, duplicate ids, missing or
        repeated cluster parts, or a non-empty output directory.

    Examples
    --------
    >>> merge_records(["part0/", "part1/"], "records/")  # doctest: +SKIP
    """
    if transfer not in TRANSFER_MODES:
        raise MergeError(f"transfer must be one of {TRANSFER_MODES}. Received: {transfer!r}")
    if not parts:
        raise MergeError("nothing to merge: give at least one records directory")
    out = Path(out_dir)
    manifests = [load_manifest(part) for part in parts]
    resolved = {manifest.directory.resolve() for manifest in manifests}
    if len(resolved) != len(manifests):
        raise MergeError("the same directory is given twice")
    if out.exists() and out.resolve() in resolved:
        raise MergeError(f"{out} is one of the inputs; merge into a new directory")
    if out.exists() and any(out.iterdir()):
        raise MergeError(f"{out} is not empty; merge into an empty or new directory")
    _check_compatible(manifests)
    _check_releases(manifests, allow_mixed_releases)
    manifests.sort(key=lambda m: (m.data.get("partition", {}).get("worker_index", 0), str(m.directory)))
    _check_partition(manifests, allow_partial)
    indexes = [read_index(manifest.directory) for manifest in manifests]
    _check_disjoint(manifests, indexes)

    out.mkdir(parents=True, exist_ok=True)
    first = manifests[0].data
    renames: dict[tuple[int, str], str] = {}
    splits = {}
    for split in SPLITS:
        entries = [(number, shard) for number, manifest in enumerate(manifests) for shard in manifest.shards(split)]
        shards = []
        for new_index, (number, shard) in enumerate(entries):
            new_name = shard_filename(first["name"], split, new_index, len(entries))
            _transfer(manifests[number].directory / shard.file, out / new_name, transfer)
            renames[(number, shard.file)] = new_name
            shards.append({"file": new_name, "examples": shard.examples, "bytes": shard.bytes, "sha256": shard.sha256})
        splits[split] = {"examples": sum(s["examples"] for s in shards), "shards": shards}
    fsync_dir(out)

    rows = []
    for number, index in enumerate(indexes):
        for row in index:
            rows.append({**row, "shard": renames[(number, row["shard"])]})
    failures = sorted(
        {tuple(f.get(column, "") for column in FAILURES_COLUMNS) for manifest in manifests for f in manifest.failures}
    )
    duplicates = sorted(
        (d for manifest in manifests for d in manifest.data.get("duplicates", [])), key=lambda d: d["path"]
    )
    atomic_write_csv(out / FAILURES_NAME, FAILURES_COLUMNS, failures)
    atomic_write_csv(out / DUPLICATES_NAME, DUPLICATES_COLUMNS,
                     ([d.get(column, "") for column in DUPLICATES_COLUMNS] for d in duplicates))
    atomic_write_csv(out / INDEX_NAME, INDEX_COLUMNS, ([row.get(c, "") for c in INDEX_COLUMNS] for row in rows))
    totals = {
        key: sum(manifest.data.get("totals", {}).get(key, 0) for manifest in manifests)
        for key in ("inputs", "examples", "failures", "duplicates", "bytes")
    }
    totals["failures"] = len(failures)
    labels = [manifest.data.get("labels") for manifest in manifests if manifest.data.get("labels")]
    manifest = {
        **{key: first[key] for key in first if key not in ("splits", "failures", "duplicates", "totals", "index")},
        "ifskeras_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "partition": {
            "num_workers": 1,
            "worker_index": 0,
            "merged_from": [
                {"directory": str(m.directory), **{k: v for k, v in m.data.get("partition", {}).items()
                                                  if k in ("num_workers", "worker_index")}}
                for m in manifests
            ],
        },
        "labels": (
            {**labels[0], "labelled": sum(label.get("labelled", 0) for label in labels)} if labels else None
        ),
        "releases": _merged_releases(manifests),
        "plan": None,
        "splits": splits,
        "totals": totals,
        "failures": [dict(zip(FAILURES_COLUMNS, failure)) for failure in failures],
        "duplicates": duplicates,
        "index": {"file": INDEX_NAME, "sha256": sha256_file(out / INDEX_NAME)},
    }
    atomic_write_json(out / MANIFEST_NAME, manifest)
    return manifest


def _check_compatible(manifests) -> None:
    reference = manifests[0]
    for other in manifests[1:]:
        differing = [key for key in _MUST_AGREE
                     if _comparable(key, reference.data.get(key)) != _comparable(key, other.data.get(key))]
        if differing:
            raise MergeError(
                f"{other.directory} differs from {reference.directory} in {', '.join(differing)}; "
                "only records converted with the same options can be merged"
            )


def _comparable(key: str, value):
    """A manifest entry as merging compares it: the radii catalogue by content, not by name,
    and records written before ``scale`` existed as spanning the bundle."""
    if key != "preprocessing" or not isinstance(value, dict):
        return value
    value = {"scale": "bundle", "re_span": None, "radii": None, **value}
    if isinstance(value["radii"], dict):
        value["radii"] = value["radii"].get("sha256")
    return value


#: The release of records written before releases were recorded in the manifest.
_NOT_RECORDED = ("(not recorded)", "(not recorded)")


def _release_key(release: dict) -> tuple[str, str]:
    return (release.get("versdap", ""), release.get("daptype", ""))



def _check_releases(manifests, allow_mixed_releases: bool) -> None:
    """Refuse parts of different DAP releases; records written before releases were recorded count as unknown."""
    found: dict[tuple[str, str], list[str]] = {}
    versions: dict[tuple[str, str], set[str]] = {}
    for manifest in manifests:
        # An empty list is a part that converted no galaxy (no release to disagree with);
        # only records written before releases were recorded lack the key.
        recorded = "releases" in manifest.data
        releases = [_release_key(release) for release in manifest.releases] if recorded else [_NOT_RECORDED]
        for release in releases:
            series = release_series(*release) if release != _NOT_RECORDED else release
            found.setdefault(series, []).append(str(manifest.directory))
            versions.setdefault(series, set()).add(release[0])
    if len(found) < 2 or allow_mixed_releases:
        return
    described = "; ".join(f"{release_text('/'.join(sorted(versions[series])), series[1])} in {', '.join(directories[:3])}"
                          for series, directories in sorted(found.items()))
    raise MergeError(
        f"the parts hold {len(found)} DAP releases ({described}). DR15 and DR17 fit the lines differently: "
        "merge only records of one release, or pass --allow-mixed-releases (allow_mixed_releases=True)"
    )


def _merged_releases(manifests) -> list[dict]:
    galaxies: dict[tuple[str, str], int] = {}
    for manifest in manifests:
        for release in manifest.releases:
            key = _release_key(release)
            galaxies[key] = galaxies.get(key, 0) + release.get("galaxies", 0)
    return [{"versdap": versdap, "daptype": daptype, "galaxies": count}
            for (versdap, daptype), count in sorted(galaxies.items())]


def _check_partition(manifests, allow_partial: bool) -> None:
    partitions = [manifest.data.get("partition", {}) for manifest in manifests]
    counts = {p.get("num_workers", 1) for p in partitions if p.get("num_workers", 1) > 1}
    if not counts:
        return
    if len(counts) > 1 or any(p.get("num_workers", 1) == 1 for p in partitions):
        raise MergeError(f"parts come from conversions split into different numbers of workers: {sorted(counts)}")
    (count,) = counts
    indices = [p["worker_index"] for p in partitions]
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise MergeError(f"worker index(es) {repeated} given more than once")
    absent = sorted(set(range(count)) - set(indices))
    if absent and not allow_partial:
        raise MergeError(
            f"parts {absent} of {count} are missing; convert them (--worker-index) or pass --allow-partial"
        )


def _check_disjoint(manifests, indexes) -> None:
    owner: dict[str, Path] = {}
    clashes = []
    for manifest, rows in zip(manifests, indexes):
        for row in rows:
            # One galaxy: its MANGAID (repeat observations in two parts clash too), else its plate-IFU.
            galaxy = f"MANGAID {row['mangaid']}" if (row.get("mangaid") or "").strip() else row["id"]
            if galaxy in owner:
                clashes.append(f"{galaxy} ({owner[galaxy]} and {manifest.directory})")
            owner.setdefault(galaxy, manifest.directory)
    if clashes:
        raise MergeError(
            f"{len(clashes)} galaxy(ies) appear in more than one part, e.g. {', '.join(clashes[:3])}; "
            "convert the overlapping inputs together so duplicates and repeat observations are resolved"
        )


def _transfer(source: Path, target: Path, transfer: str) -> None:
    """Put ``source`` at ``target`` via a temp name, so ``target`` only ever appears complete."""
    temp = target.with_name(target.name + TEMP_SUFFIX)
    temp.unlink(missing_ok=True)
    try:
        if transfer == "move":
            try:
                os.replace(source, temp)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                shutil.copyfile(source, temp)
                fsync_path(temp)
                source.unlink()
        elif transfer == "link":
            try:
                os.link(source, temp)
            except OSError:
                shutil.copyfile(source, temp)
                fsync_path(temp)
        else:
            shutil.copyfile(source, temp)
            fsync_path(temp)
        os.replace(temp, target)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise MergeError(f"cannot {transfer} {source} to {target}: {error}") from error
