"""A conversion's inputs: which MAPS files, their labels, and what each file's header says.

:func:`collect_inputs` expands files, directories and list files into sorted absolute
paths. :func:`peek_identity` reads a file's plate-IFU, MANGAID, IFU design and DAP
release from its primary header only (a few kilobytes), so the plan
(:mod:`ifskeras.records.plan`) is made before any heavy work; ``_identify`` asks the
full reader why a file whose header cannot be read is bad.
"""

from __future__ import annotations

import csv
import gzip
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from ifskeras.survey.maps import MapsReadError, NotFitsError, read_maps
from ifskeras.records.options import ConvertError, ConvertOptions

__all__ = ["HeaderIdentity", "collect_inputs", "load_labels", "load_radii", "peek_identity", "peek_plateifu"]

_MAPS_GLOB = "*MAPS*.fits*"
_MAX_HEADER_BLOCKS = 64


def collect_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[dict]]:
    """Expand files, directories and list files into sorted absolute MAPS paths.

    A path whose name contains ``.fits`` is a MAPS file (kept even if missing, so it is
    reported as a failure); a directory is searched recursively for ``*MAPS*.fits*``;
    hidden files (partial downloads) are skipped; any other file is a list of paths, one per line (``#`` comments, blank lines
    skipped; relative paths are relative to the list file). Returns the paths and the
    inputs that could not be used, as ``{'path', 'reason'}``.
    """
    paths: set[Path] = set()
    problems: list[dict] = []

    def add(path: Path, *, listed_in: Path | None = None) -> None:
        if path.is_dir():
            # Hidden files are partial downloads (survey fetch's .NAME.part), never inputs.
            paths.update(Path(os.path.abspath(p)) for p in path.rglob(_MAPS_GLOB)
                         if p.is_file() and not p.name.startswith("."))
        elif ".fits" in path.name.lower():
            paths.add(Path(os.path.abspath(path)))
        elif listed_in is None and path.is_file():
            for entry in _read_list_file(path, problems):
                add(entry if entry.is_absolute() else path.parent / entry, listed_in=path)
        elif not path.exists():
            problems.append({"path": str(path), "reason": "input does not exist"})
        else:
            problems.append({"path": str(path), "reason": "not a FITS file name (*.fits*) or directory"})

    for item in inputs:
        add(Path(item))
    return sorted(paths, key=str), problems


def _read_list_file(path: Path, problems: list[dict]) -> list[Path]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        problems.append({"path": str(path), "reason": f"not a readable list of paths ({error})"})
        return []
    entries = [line.strip() for line in text.splitlines()]
    return [Path(entry) for entry in entries if entry and not entry.startswith("#")]


def load_labels(path: str | os.PathLike, column: str) -> dict[str, str]:
    """plate-IFU -> label from a labels CSV (``plateifu`` and ``column``); ``ConvertError`` names the problem.

    Used by ``convert --labels`` and by ``evaluate``/``report --labels``. A plate-IFU
    listed twice with different labels is an error.
    """
    try:
        with open(path, newline="") as stream:
            reader = csv.DictReader(stream)
            fields = reader.fieldnames or []
            if "plateifu" not in fields or column not in fields:
                raise ConvertError(
                    f"{path}: labels CSV needs columns 'plateifu' and {column!r}; found {fields}"
                )
            labels: dict[str, str] = {}
            conflicts = []
            for row in reader:
                key = (row["plateifu"] or "").strip()
                value = (row[column] or "").strip()
                if key in labels and labels[key] != value:
                    conflicts.append(key)
                labels.setdefault(key, value)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConvertError(f"{path}: cannot read labels CSV ({error})") from error
    if conflicts:
        raise ConvertError(f"{path}: conflicting labels for {sorted(set(conflicts))[:10]}")
    return labels


def load_radii(path: str | os.PathLike) -> dict[str, float]:
    """plate-IFU -> effective radius (arcsec) for ``convert --scale re``; ``ConvertError`` names the problem.

    Any catalogue :func:`ifskeras.survey.archive.read_effective_radii` reads: a DRPall
    file, a ``survey select`` sample, a synthetic survey's catalogue.
    """
    from ifskeras.survey.archive import CatalogueError, read_effective_radii

    try:
        radii = read_effective_radii(path)
    except CatalogueError as error:
        raise ConvertError(str(error)) from error
    if not radii:
        raise ConvertError(f"{path}: no plate-IFU with a known effective radius")
    return radii


# ----------------------------------------------------------------------------- header scan

class HeaderIdentity(NamedTuple):
    """What a MAPS file's primary header says it is; '' for an absent card.

    ``plateifu`` follows :func:`ifskeras.survey.maps.read_maps` (the ``PLATEIFU`` card,
    else the file name). ``mangaid`` names the galaxy (repeat observations share it),
    ``ifudsgn`` the IFU design (``12705``: 127 fibres), and ``versdap`` and ``daptype``
    the DAP release that fitted the lines.
    """

    plateifu: str
    mangaid: str = ""
    ifudsgn: str = ""
    versdap: str = ""
    daptype: str = ""


#: Header card of each HeaderIdentity field (PLATEIFU is handled apart: it has a fallback).
_IDENTITY_CARDS = {b"MANGAID": "mangaid", b"IFUDSGN": "ifudsgn", b"VERSDAP": "versdap", b"DAPTYPE": "daptype"}


def peek_identity(path: str | os.PathLike) -> HeaderIdentity:
    """PLATEIFU, MANGAID, IFUDSGN, VERSDAP and DAPTYPE of a MAPS file, reading only its primary header.

    Raises :class:`ifskeras.survey.maps.NotFitsError` when the header cannot be read.
    """
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            magic = stream.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        plateifu, cards = "", {}
        with opener(path, "rb") as stream:
            for block_index in range(_MAX_HEADER_BLOCKS):
                block = stream.read(2880)
                if len(block) < 2880:
                    raise NotFitsError(path, "truncated primary header")
                if block_index == 0 and not block.startswith(b"SIMPLE  ="):
                    raise NotFitsError(path, "not a FITS file (no SIMPLE card at the start)")
                for start in range(0, 2880, 80):
                    card = block[start:start + 80]
                    keyword = card[:8].rstrip()
                    if keyword == b"END":
                        return HeaderIdentity(plateifu or _plateifu_from_name(path), **cards)
                    if card[8:10] != b"= ":
                        continue
                    if keyword == b"PLATEIFU":
                        plateifu = _card_value(card[10:].decode("ascii", "replace"))
                    elif keyword in _IDENTITY_CARDS:
                        cards[_IDENTITY_CARDS[keyword]] = _card_value(card[10:].decode("ascii", "replace"))
    except MapsReadError:
        raise
    except (OSError, EOFError, zlib.error) as error:
        raise NotFitsError(path, f"unreadable primary header ({error})") from error
    raise NotFitsError(path, "no END card in the primary header")


def peek_plateifu(path: str | os.PathLike) -> str:
    """The plate-IFU of a MAPS file from its primary header (see :func:`peek_identity`)."""
    return peek_identity(path).plateifu


def _card_value(text: str) -> str:
    text = text.strip()
    if text.startswith("'"):
        out, index = [], 1
        while index < len(text):
            char = text[index]
            if char == "'":
                if text[index + 1:index + 2] == "'":
                    out.append("'")
                    index += 2
                    continue
                break
            out.append(char)
            index += 1
        return "".join(out).strip()
    return text.split("/")[0].strip()


def _plateifu_from_name(path: Path) -> str:
    """As :func:`ifskeras.survey.maps.read_maps` names a file without a PLATEIFU card."""
    parts = path.name.split("-")
    if len(parts) >= 3 and parts[0] == "manga":
        return f"{parts[1]}-{parts[2]}"
    return path.name.split(".")[0]


def _identify(path: Path, options: ConvertOptions) -> tuple[HeaderIdentity | None, str | None]:
    """(identity, None) or (None, reason)."""
    try:
        return peek_identity(path), None
    except MapsReadError:
        pass
    # The header scan failed: let the full reader say precisely why.
    try:
        maps = read_maps(path, options.lines, quantity=options.quantity, reject_bits=options.reject_bits)
    except MapsReadError as error:
        return None, error.problem
    return HeaderIdentity(maps.plateifu, maps.mangaid, "", str(maps.meta.get("VERSDAP", "")).strip(),
                          str(maps.meta.get("DAPTYPE", "")).strip()), None
