"""A loopback stand-in for the SDSS Science Archive Server (SAS), with faults injected per file.

Reusable by any test that downloads: import the fixtures into the test module (pytest finds
fixtures by name in the module, so import both)::

    from archive_server import Fault, sas_server, sas_tree, write_drpall  # noqa: F401

    def test_download(sas_server, sas_tree, tmp_path):
        write_drpall(tmp_path / "drpall.fits", sas_tree.galaxies)
        sas_server.inject(sas_tree.galaxies[0].path, Fault.server_error(times=2))
        ... fetch from sas_server.base_url ...
        assert sas_server.requests_for(sas_tree.galaxies[0].path) == 3

Fixtures
--------
``sas_tree`` (session scope) -> :class:`SasTree`
    Six synthetic MaNGA galaxies (plate 10001, IFUs 1901 to 6101) written by
    :mod:`ifskeras.survey.synth` as gzipped DR17 MAPS files (35 lines, maps cropped to
    12 x 12 spaxels: about 30 kB each) at their real SAS paths
    (:func:`ifskeras.survey.archive.maps_path`), under ``sas_tree.root``. Read-only.
``sas_server`` (function scope) -> :class:`ArchiveServer`
    A ``ThreadingHTTPServer`` on 127.0.0.1 (free port) serving ``sas_tree.root`` under
    ``sas_server.base_url`` (``http://127.0.0.1:PORT/sas/``, like ``https://data.sdss.org/sas/``),
    in a daemon thread; fresh per test (no faults, zero counts) and shut down after it.

Helpers
-------
:class:`Fault` (what goes wrong for one path), :func:`drpall_row` / :func:`write_drpall`
(a DRPall-like FITS table with the real column names and types), :func:`dapall_row` /
:func:`write_dapall` (a DAPall-like one, DR17 or DR15 layout).
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from ifskeras.survey.archive import maps_path
from ifskeras.survey.synth import PLATE_IFU_FIBRES, make_galaxy, write_maps_file

#: Galaxies served by ``sas_tree``.
SERVED_GALAXIES = 6
#: Side of the served maps, in spaxels (cropped from the bundle's map: small and quick to serve).
SERVED_MAP_SIZE = 12
#: Bytes the server writes at a time: several chunks per file, so cuts and delays land mid-file.
SERVED_CHUNK_BYTES = 4096
#: Seconds a handler waits on an idle keep-alive connection before its thread ends.
_IDLE_CONNECTION_S = 5.0
_URL_PREFIX = "/sas/"
_PLATE = 10001


# ----------------------------------------------------------------------------- served files


@dataclass(frozen=True)
class ServedGalaxy:
    """One galaxy on the test archive: its names, bundle size and file (``path`` relative to the SAS root)."""

    plateifu: str
    mangaid: str
    ifu_fibres: int
    path: str
    file: Path
    kind: str = "SF"  # the synthetic class it was drawn as

    @property
    def plate(self) -> int:
        return int(self.plateifu.split("-")[0])

    @property
    def ifudesign(self) -> int:
        return int(self.plateifu.split("-")[1])

    def drpall_row(self, **overrides) -> dict:
        """This galaxy's DRPall row (main-sample Primary target, good quality) with ``overrides``."""
        return drpall_row(self.plateifu, self.mangaid, ifudesignsize=self.ifu_fibres, **overrides)


@dataclass(frozen=True)
class SasTree:
    """The directory served as the SAS root and the galaxies in it (release dr17, HYB10-MILESHC-MASTARSSP)."""

    root: Path
    galaxies: tuple[ServedGalaxy, ...]
    release: str = "dr17"


def build_sas_tree(root: Path, n: int = SERVED_GALAXIES, *, seed: int = 7,
                   classes: Sequence[str] = ("SF",)) -> SasTree:
    """Write ``n`` synthetic gzipped DR17 MAPS files at their SAS paths under ``root``.

    Galaxy ``i`` is of class ``classes[i % len(classes)]`` (all star-forming by default).
    """
    rng_seeds = np.random.SeedSequence(seed).spawn(n)
    galaxies = []
    counts: Counter = Counter()
    for index in range(n):
        fibres = PLATE_IFU_FIBRES[index % len(PLATE_IFU_FIBRES)]
        counts[fibres] += 1
        ifudesign = fibres * 100 + counts[fibres]
        plateifu = f"{_PLATE}-{ifudesign}"
        kind = classes[index % len(classes)]
        galaxy = _cropped(make_galaxy(np.random.default_rng(rng_seeds[index]), kind, dap="dr17",
                                      ifu_fibres=fibres, defects=False), SERVED_MAP_SIZE)
        path = maps_path("dr17", _PLATE, ifudesign)
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        mangaid = f"1-{900001 + index}"
        write_maps_file(file, galaxy, plateifu=plateifu, mangaid=mangaid, ra=150.0 + index * 0.01, dec=2.0)
        galaxies.append(ServedGalaxy(plateifu, mangaid, fibres, path, file, kind))
    return SasTree(root=root, galaxies=tuple(galaxies))


def _cropped(galaxy, size: int):
    """The central ``size`` x ``size`` spaxels of a synthetic galaxy (all its maps)."""
    height, width = galaxy.flux.shape[1:]
    y0, x0 = (height - size) // 2, (width - size) // 2
    window = (slice(None), slice(y0, y0 + size), slice(x0, x0 + size))
    return dataclasses.replace(galaxy, flux=galaxy.flux[window].copy(), ivar=galaxy.ivar[window].copy(),
                               mask=galaxy.mask[window].copy(), model=galaxy.model[window].copy())


# ----------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """What the server does wrong for one path, for its first ``times`` requests (None: every request).

    Kinds: ``status`` (answer ``status`` with a small HTML body), ``cut`` (send ``fraction`` of
    the file, then reset the connection), ``short`` (send ``fraction`` of the file and close
    cleanly; with ``content_length`` the header still announces the whole file, without it
    there is no Content-Length), ``slow`` (sleep ``delay`` seconds before each chunk).
    Build them with the class methods.
    """

    kind: str
    times: int | None = None
    status: int = 500
    fraction: float = 0.5
    content_length: bool = True
    delay: float = 0.0

    @classmethod
    def not_found(cls) -> "Fault":
        return cls("status", status=404)

    @classmethod
    def forbidden(cls) -> "Fault":
        return cls("status", status=403)

    @classmethod
    def server_error(cls, times: int | None = None, status: int = 500) -> "Fault":
        return cls("status", times=times, status=status)

    @classmethod
    def cut(cls, times: int | None = None, fraction: float = 0.5) -> "Fault":
        return cls("cut", times=times, fraction=fraction)

    @classmethod
    def short(cls, times: int | None = None, fraction: float = 0.5, content_length: bool = True) -> "Fault":
        return cls("short", times=times, fraction=fraction, content_length=content_length)

    @classmethod
    def slow(cls, delay: float, times: int | None = None) -> "Fault":
        return cls("slow", times=times, delay=delay)


# ----------------------------------------------------------------------------- the server


class ArchiveServer:
    """A SAS-like HTTP server on 127.0.0.1 serving ``root`` under ``/sas/``, with faults per path.

    Use :meth:`inject` to make a path fail, :meth:`requests_for` / :attr:`total_requests` to
    count GET requests (every attempt, faulty or not), :attr:`log` for ``(path, status)`` in
    order. Start with :meth:`start` (or ``with``), stop with :meth:`stop`.
    """

    def __init__(self, root: str | Path, *, chunk_bytes: int = SERVED_CHUNK_BYTES):
        self.root = Path(root).resolve()
        self.chunk_bytes = chunk_bytes
        self.log: list[tuple[str, int]] = []
        self._faults: dict[str, Fault] = {}
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._httpd: _QuietThreadingServer | None = None
        self._thread: threading.Thread | None = None

    # -- control
    def start(self) -> "ArchiveServer":
        handler = type("ArchiveHandler", (_ArchiveHandler,), {"archive": self})
        self._httpd = _QuietThreadingServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="archive-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "ArchiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The archive root, like ``https://data.sdss.org/sas/``; a sample path appended gives a file."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{_URL_PREFIX}"

    def url_of(self, path: str) -> str:
        return self.base_url + path

    def inject(self, path: str, fault: Fault | None) -> None:
        """Make requests for ``path`` (relative to the SAS root) fail with ``fault``; None removes it."""
        with self._lock:
            if fault is None:
                self._faults.pop(path, None)
            else:
                self._faults[path] = fault

    def requests_for(self, path: str) -> int:
        """GET requests received for ``path`` so far."""
        with self._lock:
            return self._counts[path]

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self.log.clear()

    # -- used by the handler
    def _arrival(self, path: str) -> Fault | None:
        """Count a request and return the fault it gets, if any."""
        with self._lock:
            self._counts[path] += 1
            fault = self._faults.get(path)
            if fault is None or (fault.times is not None and self._counts[path] > fault.times):
                return None
            return fault

    def _record(self, path: str, status: int) -> None:
        with self._lock:
            self.log.append((path, status))


class _QuietThreadingServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """Clients that hang up mid-file (as the tests make them) are not errors here."""


class _ArchiveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_CONNECTION_S
    archive: ArchiveServer  # set on the subclass made by ArchiveServer.start

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Silent: the archive keeps its own log."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        url_path = unquote(urlsplit(self.path).path)
        if not url_path.startswith(_URL_PREFIX):
            return self._status(HTTPStatus.NOT_FOUND, url_path)
        path = url_path[len(_URL_PREFIX):]
        fault = self.archive._arrival(path)
        if fault is not None and fault.kind == "status":
            return self._status(HTTPStatus(fault.status), path)
        file = (self.archive.root / path).resolve()
        if self.archive.root not in file.parents or not file.is_file():
            return self._status(HTTPStatus.NOT_FOUND, path)
        body = file.read_bytes()
        sent = len(body) if fault is None or fault.kind == "slow" else int(len(body) * fault.fraction)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-gzip")
        if fault is None or fault.kind != "short" or fault.content_length:
            self.send_header("Content-Length", str(len(body)))
        if fault is not None and fault.kind in ("cut", "short"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.archive._record(path, HTTPStatus.OK)
        try:
            for offset in range(0, sent, self.archive.chunk_bytes):
                if fault is not None and fault.kind == "slow":
                    time.sleep(fault.delay)
                self.wfile.write(body[offset:min(offset + self.archive.chunk_bytes, sent)])
                self.wfile.flush()
        except OSError:  # the client gave up (e.g. its read timed out)
            self.close_connection = True
            return
        if fault is not None and fault.kind == "cut":
            # SO_LINGER 0: close() sends a reset, as a dropped connection looks to the client.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _status(self, status: HTTPStatus, path: str):
        body = f"<html><body><h1>{status.value} {status.phrase}</h1></body></html>\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.archive._record(path, status.value)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def sas_tree(tmp_path_factory) -> SasTree:
    """Six synthetic gzipped DR17 MAPS files at their SAS paths (read-only; see the module docstring)."""
    return build_sas_tree(tmp_path_factory.mktemp("sas"))


@pytest.fixture
def sas_server(sas_tree):
    """An :class:`ArchiveServer` serving ``sas_tree`` on 127.0.0.1, fresh for each test and stopped after it."""
    with ArchiveServer(sas_tree.root) as server:
        yield server


# ----------------------------------------------------------------------------- catalogues

#: DRPall columns written by :func:`write_drpall`, with the numpy types of the real file
#: (lower-case names; strings as bytes, flags and IDs as int64, NSA values as float32).
DRPALL_TYPES: Mapping[str, str] = {
    "plate": "i8", "ifudsgn": "S6", "plateifu": "S12", "mangaid": "S10", "drp3qual": "i8",
    "bluesn2": "f4", "redsn2": "f4", "mngtarg1": "i8", "mngtarg2": "i8", "mngtarg3": "i8",
    "ifudesignsize": "i8", "z": "f4", "nsa_z": "f4", "nsa_elpetro_th50_r": "f4", "nsa_elpetro_ba": "f4",
}
#: DAPall columns written by :func:`write_dapall` (upper-case names, as in the real file).
DAPALL_TYPES: Mapping[str, str] = {
    "PLATE": "i8", "IFUDESIGN": "i8", "PLATEIFU": "S12", "MANGAID": "S10", "DAPTYPE": "S30",
    "DAPDONE": "?", "DRP3QUAL": "i8", "DAPQUAL": "i8",
}
_PRIMARY = 1 << 10


def drpall_row(plateifu: str, mangaid: str, **overrides) -> dict:
    """A DRPall row: a good (DRP3QUAL 0) Primary target at z = 0.03, b/a 0.6, Re 4 arcsec; ``overrides`` win."""
    plate, ifudesign = (int(part) for part in plateifu.split("-"))
    row = {
        "plate": plate, "ifudsgn": str(ifudesign), "plateifu": plateifu, "mangaid": mangaid, "drp3qual": 0,
        "bluesn2": 20.0, "redsn2": 30.0, "mngtarg1": _PRIMARY, "mngtarg2": 0, "mngtarg3": 0,
        "ifudesignsize": ifudesign // 100, "z": 0.03, "nsa_z": 0.03, "nsa_elpetro_th50_r": 4.0,
        "nsa_elpetro_ba": 0.6,
    }
    unknown = set(overrides) - set(row)
    if unknown:
        raise ValueError(f"unknown DRPall columns {sorted(unknown)}; known: {sorted(row)}")
    row.update(overrides)
    return row


def write_drpall(path: str | Path, rows: Iterable, *, layout: str = "dr17", drop: Iterable[str] = ()) -> Path:
    """Write a DRPall-like FITS file; ``rows`` are :class:`ServedGalaxy` or :func:`drpall_row` dicts.

    ``layout="dr17"``: a ``MASTAR`` table first, then the galaxies in the table named ``MANGA``
    (the real file has MANGA first: putting it second checks the reader goes by name);
    ``layout="dr15"``: the galaxies in the unnamed extension 1. ``drop`` leaves columns out.
    """
    from astropy.io import fits

    rows = [row.drpall_row() if isinstance(row, ServedGalaxy) else dict(row) for row in rows]
    columns = [name for name in DRPALL_TYPES if name not in set(drop)]
    galaxies = _table(rows, columns, DRPALL_TYPES)
    hdus = [fits.PrimaryHDU()]
    if layout == "dr17":
        stars = _table([drpall_row("9999-901", "3-0001", ifudesignsize=-9999)], ["plateifu", "mangaid"],
                       DRPALL_TYPES)
        hdus += [fits.BinTableHDU(stars, name="MASTAR"), fits.BinTableHDU(galaxies, name="MANGA")]
    elif layout == "dr15":
        hdus.append(fits.BinTableHDU(galaxies))
    else:
        raise ValueError(f"layout must be dr17 or dr15. Received: {layout!r}")
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def dapall_row(plateifu: str, mangaid: str, daptype: str = "HYB10-MILESHC-MASTARSSP", **overrides) -> dict:
    """A DAPall row: DAP finished (DAPDONE true), DAPQUAL 0, r-band SNR_MED 10; ``overrides`` (lower case) win."""
    plate, ifudesign = (int(part) for part in plateifu.split("-"))
    row = {"plate": plate, "ifudesign": ifudesign, "plateifu": plateifu, "mangaid": mangaid, "daptype": daptype,
           "dapdone": True, "drp3qual": 0, "dapqual": 0, "snr_med": (8.0, 10.0, 9.0, 7.0)}
    row.update(overrides)
    return row


def write_dapall(path: str | Path, rows: Iterable[Mapping], *, layout: str = "dr17") -> Path:
    """Write a DAPall-like FITS file from :func:`dapall_row` dicts.

    ``layout="dr17"``: one table per DAPTYPE, named after it (as the DR17 DAPall);
    ``layout="dr15"``: one table ``DAPALL`` with a DAPTYPE column. ``SNR_MED`` is float64 (4,).
    """
    from astropy.io import fits

    rows = [{key.upper(): value for key, value in row.items()} for row in rows]
    hdus = [fits.PrimaryHDU()]

    def table(subset):
        data = _table(subset, list(DAPALL_TYPES), DAPALL_TYPES)
        snr = np.array([row["SNR_MED"] for row in subset], dtype="f8").reshape(len(subset), 4)
        return fits.BinTableHDU.from_columns(
            [*fits.BinTableHDU(data).columns, fits.Column(name="SNR_MED", format="4D", array=snr)])

    if layout == "dr17":
        for daptype in dict.fromkeys(row["DAPTYPE"] for row in rows):
            hdu = table([row for row in rows if row["DAPTYPE"] == daptype])
            hdu.name = daptype
            hdus.append(hdu)
    elif layout == "dr15":
        hdu = table(rows)
        hdu.name = "DAPALL"
        hdus.append(hdu)
    else:
        raise ValueError(f"layout must be dr17 or dr15. Received: {layout!r}")
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def _table(rows: list[dict], columns: list[str], types: Mapping[str, str]) -> np.ndarray:
    """A numpy record array of ``rows`` with the catalogue's column types (strings encoded as bytes)."""
    dtype = [(name, types[name]) for name in columns]
    records = np.zeros(len(rows), dtype=dtype)
    for index, row in enumerate(rows):
        for name in columns:
            value = row[name]
            records[name][index] = value.encode() if isinstance(value, str) else value
    return records
