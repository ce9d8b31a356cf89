"""Parallel, resumable downloads of MAPS files from the SDSS Science Archive Server.

:func:`fetch_sample` reads the ``path`` column of a sample CSV (``ifskeras survey select``)
and downloads each file from ``base_url + path`` into one flat directory,
``out/<file name>``. Flat, because MAPS file names are already unique (they hold the
plate-IFU and the DAPTYPE) and ``ifskeras convert`` searches a directory for them;
two paths with the same file name are refused before anything is downloaded.

A file appears under its final name only when it is complete and checked:

- it is streamed into ``out/.<name>.part`` (a leftover from a killed run is overwritten);
- its size equals the Content-Length when the server sends one;
- the gzip stream decompresses to its end (which checks gzip's CRC and length);
- the decompressed data starts with a FITS primary header (``SIMPLE  =`` ... ``END``) and
  is a whole number of 2880-byte FITS blocks;
- then it is fsynced and renamed into place.

An existing file that fails its check is moved aside to ``out/.<name>.damaged`` before it is
downloaded again, and removed once the new copy is in place (kept if the download fails).
One fetch at a time writes into a directory (``out/.fetch.lock``); a second is refused.

Connection errors, timeouts, cut connections, short or damaged bodies and HTTP 5xx/429
are retried with exponential backoff; 404, 403 and other client errors are not. A failed
file never stops the others: failures go to ``out/fetch_failures.csv`` (path, url,
reason). ``out/fetch.json`` records what was fetched (size, sha256, when).

A rerun downloads only what is missing or damaged. An existing file is checked cheaply
(``check="quick"``: its size against fetch.json, the FITS header at its start and the
gzip trailer's length field) or fully (``check="full"``: decompress it all).

Each thread has its own ``requests.Session`` (connections are reused within a thread).
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from ifskeras.common.files import atomic_write_csv, atomic_write_json, fsync_dir

__all__ = [
    "DEFAULT_BASE_URL",
    "FAILURES_FILE",
    "MANIFEST_FILE",
    "FetchError",
    "ContentError",
    "FetchOptions",
    "FetchItem",
    "FetchOutcome",
    "FetchResult",
    "read_sample_paths",
    "plan_downloads",
    "check_existing_file",
    "fetch_files",
    "fetch_sample",
]

#: Root of the SDSS Science Archive Server; sample paths are relative to it.
DEFAULT_BASE_URL = "https://data.sdss.org/sas/"
#: Written into the output directory: the files that failed in the last run.
FAILURES_FILE = "fetch_failures.csv"
#: Written into the output directory: what was fetched, sizes, checksums and when.
LOCK_FILE = ".fetch.lock"
MANIFEST_FILE = "fetch.json"
MANIFEST_VERSION = 1

_FITS_BLOCK = 2880
_FITS_CARD = 80
#: A primary header longer than this many blocks is not a MAPS file's (theirs take a few).
_MAX_HEADER_BLOCKS = 100
_GZIP_MAGIC = b"\x1f\x8b"
#: Statuses worth retrying: the server or a proxy is busy or broken, not the request.
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHECKS = ("quick", "full")
_QUICK_READ_BYTES = 1 << 16
_MAX_REASON_CHARS = 200


class FetchError(ValueError):
    """The sample or the output directory cannot be used; the message names the file and the problem."""


class ContentError(ValueError):
    """Downloaded or existing bytes are not a complete gzipped (or plain) FITS file."""


@dataclass(frozen=True)
class FetchOptions:
    """How to download: server, parallel threads, retries and their backoff, timeouts, checks.

    ``timeout`` is in seconds for the connection and for each read (a server that stops
    sending for that long is retried). Attempt ``k`` (from 0) that fails waits
    ``backoff * 2**k`` seconds (at most ``max_backoff``) before the next; ``retries`` is the
    number of retries after the first attempt. ``check`` is how existing files are checked:
    ``quick`` or ``full`` (see the module docstring).
    """

    base_url: str = DEFAULT_BASE_URL
    jobs: int = 4
    retries: int = 3
    timeout: float = 60.0
    backoff: float = 1.0
    max_backoff: float = 60.0
    check: str = "quick"
    chunk_bytes: int = 1 << 18

    def __post_init__(self):
        if not str(self.base_url).startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://. Received: {self.base_url!r}")
        if int(self.jobs) < 1:
            raise ValueError(f"jobs must be at least 1. Received: {self.jobs!r}")
        if int(self.retries) < 0:
            raise ValueError(f"retries must be 0 or more. Received: {self.retries!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive. Received: {self.timeout!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"backoff and max_backoff must be >= 0. Received: {self.backoff!r}, "
                             f"{self.max_backoff!r}")
        if self.check not in _CHECKS:
            raise ValueError(f"check must be one of {', '.join(_CHECKS)}. Received: {self.check!r}")
        if int(self.chunk_bytes) < 1:
            raise ValueError(f"chunk_bytes must be positive. Received: {self.chunk_bytes!r}")


@dataclass(frozen=True)
class FetchItem:
    """One file to download: its SAS path, its URL and where it goes."""

    path: str
    url: str
    target: Path

    @property
    def temporary(self) -> Path:
        """Where it is streamed before the checks (hidden, beside the target: the rename is atomic)."""
        return self.target.with_name(f".{self.target.name}.part")

    @property
    def set_aside(self) -> Path:
        """Where an existing file judged damaged waits while it is downloaded again (kept if that fails)."""
        return self.target.with_name(f".{self.target.name}.damaged")


@dataclass(frozen=True)
class FetchOutcome:
    """What happened to one file: ``fetched``, ``present`` (already there and sound) or ``failed``."""

    item: FetchItem
    status: str
    bytes: int = 0
    sha256: str = ""
    attempts: int = 0
    reason: str = ""
    replaced_damaged: str = ""


@dataclass(frozen=True)
class FetchResult:
    """All outcomes of a run, in sample order, and where its records were written."""

    out_dir: Path
    outcomes: tuple[FetchOutcome, ...]
    seconds: float
    failures_csv: Path
    manifest_json: Path
    interrupted: bool = False

    def _with(self, status: str) -> list[FetchOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def fetched(self) -> list[FetchOutcome]:
        return self._with("fetched")

    @property
    def present(self) -> list[FetchOutcome]:
        return self._with("present")

    @property
    def failures(self) -> list[FetchOutcome]:
        return self._with("failed")

    @property
    def replaced(self) -> list[FetchOutcome]:
        """Existing files that were damaged and have been downloaded again."""
        return [outcome for outcome in self.fetched if outcome.replaced_damaged]

    @property
    def bytes_fetched(self) -> int:
        return sum(outcome.bytes for outcome in self.fetched)


# ----------------------------------------------------------------------------- planning


def read_sample_paths(csv_path: str | os.PathLike) -> list[str]:
    """The ``path`` column of a sample CSV, in order, without repeats.

    Raises
    ------
    FetchError
        The file is missing, has no ``path`` column, or a path is empty, absolute or climbs
        out of the archive (``..``).
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                found = ", ".join(reader.fieldnames or []) or "none"
                raise FetchError(f"{csv_path}: no 'path' column (columns: {found}); "
                                 f"make the sample with `ifskeras survey select`")
            paths: list[str] = []
            seen: set[str] = set()
            for line, row in enumerate(reader, start=2):
                path = (row.get("path") or "").strip()
                problem = _path_problem(path)
                if problem:
                    raise FetchError(f"{csv_path}: line {line}: {problem}")
                if path not in seen:
                    seen.add(path)
                    paths.append(path)
    except FileNotFoundError:
        raise FetchError(f"{csv_path}: file does not exist") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise FetchError(f"{csv_path}: not a readable CSV file ({error})") from None
    return paths


def plan_downloads(paths: Iterable[str], out_dir: str | os.PathLike, base_url: str) -> list[FetchItem]:
    """One :class:`FetchItem` per path: URL ``base_url + path``, target ``out_dir/<file name>``.

    Raises
    ------
    FetchError
        A path is unusable, or two different paths share a file name (the layout is flat).
    """
    out_dir = Path(out_dir)
    base = str(base_url).rstrip("/") + "/"
    items: list[FetchItem] = []
    by_name: dict[str, str] = {}
    for path in paths:
        problem = _path_problem(path)
        if problem:
            raise FetchError(problem)
        name = PurePosixPath(path).name
        if name in by_name and by_name[name] != path:
            raise FetchError(f"two sample paths share the file name {name}: {by_name[name]} and {path}; "
                             f"the output directory is flat, so fetch them into separate directories")
        if name in by_name:
            continue
        by_name[name] = path
        items.append(FetchItem(path=path, url=base + path.lstrip("/"), target=out_dir / name))
    return items


def _path_problem(path: str) -> str:
    if not path:
        return "empty path"
    pure = PurePosixPath(path)
    if pure.is_absolute() or "://" in path:
        return f"path {path!r} must be relative to the archive root"
    if ".." in pure.parts:
        return f"path {path!r} must not contain '..'"
    if not pure.name or pure.name.startswith("."):
        return f"path {path!r} does not end in a file name"
    return ""


# ----------------------------------------------------------------------------- content checks


class _ContentCheck:
    """Checks bytes as they stream: gzip decompresses to its end, a FITS primary header comes first.

    Plain (uncompressed) FITS is accepted too, recognised by its first bytes.
    """

    def __init__(self):
        self._gzipped: bool | None = None
        self._decompressor = None
        self._finished_member = False
        self._head = bytearray()
        self._header_found = False
        self.decompressed_bytes = 0

    @property
    def header_found(self) -> bool:
        return self._header_found

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._gzipped is None:
            self._gzipped = chunk[:2] == _GZIP_MAGIC
            if self._gzipped:
                self._decompressor = zlib.decompressobj(wbits=31)
        if not self._gzipped:
            self._inspect(chunk)
            return
        data = chunk
        while data:
            if self._finished_member:
                # Another gzip member follows (concatenated gzip is still one file).
                self._decompressor = zlib.decompressobj(wbits=31)
                self._finished_member = False
            try:
                self._inspect(self._decompressor.decompress(data))
            except zlib.error as error:
                raise ContentError(f"corrupt gzip data ({error})") from None
            if self._decompressor.eof:
                self._finished_member = True
                data = self._decompressor.unused_data
            else:
                data = b""

    def finish(self) -> None:
        """Raise :class:`ContentError` unless everything fed is one complete file."""
        if self._gzipped is None:
            raise ContentError("empty file")
        if self._gzipped and not self._finished_member:
            raise ContentError(f"gzip stream ends early (truncated after {self.decompressed_bytes} "
                               f"decompressed bytes)")
        if not self._header_found:
            raise ContentError("no complete FITS primary header (SIMPLE ... END) at the start")
        if self.decompressed_bytes % _FITS_BLOCK:
            raise ContentError(f"{self.decompressed_bytes} bytes is not a whole number of "
                               f"{_FITS_BLOCK}-byte FITS blocks (truncated)")

    def _inspect(self, data: bytes) -> None:
        self.decompressed_bytes += len(data)
        if self._header_found or not data:
            return
        start = len(self._head)
        self._head += data
        if not bytes(self._head[:9]) == b"SIMPLE  ="[: len(self._head[:9])]:
            raise ContentError("not a FITS file (does not start with 'SIMPLE  =')")
        first_card = start - start % _FITS_CARD
        for offset in range(first_card, len(self._head) - _FITS_CARD + 1, _FITS_CARD):
            card = bytes(self._head[offset:offset + _FITS_CARD])
            if card[:3] == b"END" and not card[3:].strip():
                self._header_found = True
                self._head = bytearray()
                return
        if len(self._head) > _MAX_HEADER_BLOCKS * _FITS_BLOCK:
            raise ContentError(f"no END card in the first {_MAX_HEADER_BLOCKS} FITS blocks")


def check_existing_file(path: str | os.PathLike, *, full: bool = False, expected_bytes: int | None = None) -> str:
    """Why an existing download is damaged, or '' if it looks sound.

    Quick (default): the size matches ``expected_bytes`` (from fetch.json) when given, the
    start decompresses to a FITS primary header, and the gzip trailer's length field is a
    whole number of FITS blocks (a truncated file ends in arbitrary bytes). Reads a few
    kilobytes. Full: decompresses the whole file (gzip CRC included).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        if expected_bytes is not None and size != expected_bytes:
            return f"size {size} bytes differs from the {expected_bytes} bytes recorded in {MANIFEST_FILE}"
        check = _ContentCheck()
        with open(path, "rb") as stream:
            gzipped = stream.read(2) == _GZIP_MAGIC
            stream.seek(0)
            if full:
                while chunk := stream.read(_QUICK_READ_BYTES):
                    check.feed(chunk)
                check.finish()
                return ""
            while not check.header_found and (chunk := stream.read(_QUICK_READ_BYTES)):
                check.feed(chunk)
            if not check.header_found:
                check.finish()  # says why: a gzip that ends early, or no header
            if gzipped:
                # gzip ends with the decompressed length (mod 2**32): a whole FITS file is whole blocks.
                stream.seek(-4, os.SEEK_END)
                length = int.from_bytes(stream.read(4), "little")
                if length == 0 or length % _FITS_BLOCK:
                    return (f"gzip trailer gives {length} decompressed bytes, not a whole number of "
                            f"{_FITS_BLOCK}-byte FITS blocks (truncated or damaged)")
            elif size % _FITS_BLOCK:
                return f"{size} bytes is not a whole number of {_FITS_BLOCK}-byte FITS blocks (truncated)"
    except ContentError as error:
        return str(error)
    except OSError as error:
        return f"cannot read ({error.strerror or error})"
    return ""


# ----------------------------------------------------------------------------- downloading


class _RetryableFailure(Exception):
    """Worth another attempt: the network, the server or the bytes it sent were at fault."""


class _PermanentFailure(Exception):
    """Retrying will not help: the server refused the request or the file is not there."""


class _Cancelled(Exception):
    """The run is being interrupted."""


class _Downloader:
    """Downloads one item at a time per thread, each thread with its own requests.Session."""

    def __init__(self, options: FetchOptions, stop: threading.Event):
        self._options = options
        self._stop = stop
        self._local = threading.local()
        self._sessions: list = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            from ifskeras import __version__

            session = requests.Session()
            # identity: an Apache serving .fits.gz with Content-Encoding must not have the
            # bytes decompressed on the way (raw bytes are written below in any case).
            session.headers.update({"User-Agent": f"ifskeras/{__version__} (survey fetch)",
                                    "Accept-Encoding": "identity"})
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def run(self, item: FetchItem, expected_bytes: int | None) -> FetchOutcome:
        """Check an existing file, then download with retries when it is missing or damaged."""
        if self._stop.is_set():
            raise _Cancelled()
        try:
            return self._check_then_download(item, expected_bytes)
        except OSError as error:  # the output directory, not the network: this file fails, the rest go on
            return FetchOutcome(item, "failed", reason=f"cannot replace {error.filename or item.target}: "
                                                       f"{error.strerror or error}")

    def _check_then_download(self, item: FetchItem, expected_bytes: int | None) -> FetchOutcome:
        damaged = ""
        if item.target.exists():
            damaged = check_existing_file(item.target, full=self._options.check == "full",
                                          expected_bytes=expected_bytes)
            if not damaged:
                return FetchOutcome(item, "present", bytes=item.target.stat().st_size)
            # Moved aside before downloading: a damaged file must not pass for a good one if the
            # download fails, and a good file misjudged as damaged is not lost (hidden names are
            # never inputs of convert or label).
            os.replace(item.target, item.set_aside)
        item.temporary.unlink(missing_ok=True)
        reason = ""
        attempts = 0
        for attempt in range(self._options.retries + 1):
            attempts = attempt + 1
            try:
                size, sha256 = self._download_once(item)
            except _PermanentFailure as failure:
                return FetchOutcome(item, "failed", attempts=attempts, reason=str(failure),
                                    replaced_damaged=damaged)
            except _RetryableFailure as failure:
                reason = str(failure)
                if attempt < self._options.retries:
                    delay = min(self._options.backoff * 2 ** attempt, self._options.max_backoff)
                    if self._stop.wait(delay):
                        raise _Cancelled() from None
                continue
            finally:
                item.temporary.unlink(missing_ok=True)  # renamed away on success; partial otherwise
            item.set_aside.unlink(missing_ok=True)
            return FetchOutcome(item, "fetched", bytes=size, sha256=sha256, attempts=attempts,
                                replaced_damaged=damaged)
        return FetchOutcome(item, "failed", attempts=attempts, replaced_damaged=damaged,
                            reason=f"{reason} (gave up after {attempts} attempt{'s' * (attempts > 1)})")

    def _download_once(self, item: FetchItem) -> tuple[int, str]:
        import requests
        import urllib3

        received = 0
        expected: int | None = None
        try:
            with self._session().get(item.url, stream=True, allow_redirects=True,
                                     timeout=(self._options.timeout, self._options.timeout)) as response:
                status = response.status_code
                if status in _RETRY_STATUSES or status >= 500:
                    raise _RetryableFailure(f"HTTP {status} {response.reason or ''}".strip())
                if status != 200:
                    raise _PermanentFailure(f"HTTP {status} {response.reason or ''}".strip())
                announced = response.headers.get("Content-Length")
                expected = int(announced) if announced and announced.isdigit() else None
                check = _ContentCheck()
                digest = hashlib.sha256()
                try:
                    with open(item.temporary, "wb") as out:
                        # Raw bytes, never decoded: the file is stored exactly as the archive holds it.
                        for chunk in response.raw.stream(self._options.chunk_bytes, decode_content=False):
                            if self._stop.is_set():
                                raise _Cancelled()
                            out.write(chunk)
                            received += len(chunk)
                            digest.update(chunk)
                            check.feed(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                except ContentError as error:
                    raise _RetryableFailure(f"damaged content after {received} bytes: {error}") from None
                except OSError as error:
                    if isinstance(error, (ConnectionError, TimeoutError)):
                        raise
                    raise _PermanentFailure(f"cannot write {item.temporary}: {error.strerror or error}") from None
                if expected is not None and received != expected:
                    raise _RetryableFailure(f"short body: {received} of {expected} bytes")
                try:
                    check.finish()
                except ContentError as error:
                    raise _RetryableFailure(f"damaged content: {error}") from None
        except (_RetryableFailure, _PermanentFailure, _Cancelled):
            raise
        except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError) as error:
            raise _RetryableFailure(f"timed out after {received} bytes ({_short(error)})") from None
        except (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError) as error:
            if expected is not None and received < expected and _caused_by_incomplete_read(error):
                raise _RetryableFailure(f"short body: {received} of {expected} bytes "
                                        f"(the server closed the connection early)") from None
            raise _RetryableFailure(f"connection cut after {received} bytes ({_short(error)})") from None
        except (requests.ConnectionError, ConnectionError) as error:
            raise _RetryableFailure(f"connection failed ({_short(error)})") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            raise _RetryableFailure(f"request failed ({_short(error)})") from None
        os.replace(item.temporary, item.target)
        fsync_dir(item.target.parent)
        return received, digest.hexdigest()


def _caused_by_incomplete_read(error: BaseException) -> bool:
    """urllib3 reports a body shorter than its Content-Length as a ProtocolError around IncompleteRead."""
    import http.client

    import urllib3

    return any(isinstance(arg, (urllib3.exceptions.IncompleteRead, http.client.IncompleteRead))
               for arg in error.args)


def _short(error: BaseException) -> str:
    """An exception as one line: requests and urllib3 nest the same cause several times."""
    cause = error
    while cause.args and isinstance(cause.args[0], BaseException):
        cause = cause.args[0]
    text = cause.args[0] if cause.args and isinstance(cause.args[0], str) else str(cause)
    text = (text or type(cause).__name__).splitlines()[0]
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS - 3] + "..."


# ----------------------------------------------------------------------------- the run


def fetch_files(paths: Sequence[str], out_dir: str | os.PathLike, options: FetchOptions | None = None, *,
                progress: Callable[[int, int, int], None] | None = None) -> FetchResult:
    """Download archive paths into ``out_dir`` (see the module docstring); never raises for one bad file.

    ``progress(done, total, failed)`` is called after each file. ``out_dir/fetch.json`` and
    ``out_dir/fetch_failures.csv`` are rewritten at the end, also when interrupted.

    Raises
    ------
    FetchError
        A path is unusable, two paths share a file name, or fetch.json is unreadable.
    KeyboardInterrupt
        After the downloads in flight were stopped and the records written.
    """
    options = options or FetchOptions()
    out_dir = Path(out_dir)
    items = plan_downloads(paths, out_dir, options.base_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_FILE
    lock = _lock_directory(out_dir)  # two fetches into one directory would rename each other's partial files
    manifest = _read_manifest(manifest_path)
    recorded = manifest["files"]
    for item in items:
        item.temporary.unlink(missing_ok=True)  # leftovers of a killed run

    start = time.perf_counter()
    stop = threading.Event()
    downloader = _Downloader(options, stop)
    outcomes: dict[int, FetchOutcome] = {}
    failed = 0
    interrupted = False
    try:
        with ThreadPoolExecutor(max_workers=int(options.jobs), thread_name_prefix="fetch") as pool:
            futures = {
                pool.submit(downloader.run, item, _recorded_bytes(recorded, item)): index
                for index, item in enumerate(items)
            }
            try:
                for future in as_completed(futures):
                    outcome = future.result()
                    outcomes[futures[future]] = outcome
                    failed += outcome.status == "failed"
                    if progress is not None:
                        progress(len(outcomes), len(items), failed)
            except BaseException:
                interrupted = True
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        downloader.close()
        Path(lock.name).unlink(missing_ok=True)  # while still held, so no other run holds a lock on it
        lock.close()
        done = tuple(outcomes[index] for index in sorted(outcomes))
        result = FetchResult(out_dir=out_dir, outcomes=done, seconds=time.perf_counter() - start,
                             failures_csv=out_dir / FAILURES_FILE, manifest_json=manifest_path,
                             interrupted=interrupted)
        _write_records(result, manifest, options)
    return result


def fetch_sample(csv_path: str | os.PathLike, out_dir: str | os.PathLike, options: FetchOptions | None = None, *,
                 progress: Callable[[int, int, int], None] | None = None) -> FetchResult:
    """Download the MAPS files listed in a sample CSV's ``path`` column (:func:`fetch_files`).

    Examples
    --------
    >>> result = fetch_sample("sample.csv", "maps/", FetchOptions(jobs=8))  # doctest: +SKIP
    >>> len(result.failures)  # doctest: +SKIP
    0
    """
    return fetch_files(read_sample_paths(csv_path), out_dir, options, progress=progress)


def _lock_directory(out_dir: Path):
    """An exclusive lock on ``out_dir/.fetch.lock`` for this run (released when the file closes)."""
    import fcntl

    stream = open(out_dir / LOCK_FILE, "a")
    try:
        fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        stream.close()
        raise FetchError(f"{out_dir}: another `ifskeras survey fetch` is writing into this directory; "
                         "wait for it to finish (a rerun then fetches only what is still missing)") from None
    return stream


def _recorded_bytes(recorded: dict, item: FetchItem) -> int | None:
    entry = recorded.get(item.target.name)
    if isinstance(entry, dict) and entry.get("path") == item.path and isinstance(entry.get("bytes"), int):
        return entry["bytes"]
    return None


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        return {"version": MANIFEST_VERSION, "files": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FetchError(f"{path}: unreadable ({error}); remove it to start the record afresh "
                         f"(the files themselves are checked on every run)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise FetchError(f"{path}: not a fetch record (no 'files' mapping); remove it to start afresh")
    return manifest


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_records(result: FetchResult, manifest: dict, options: FetchOptions) -> None:
    """Update fetch.json with this run's files and rewrite fetch_failures.csv (both atomically)."""
    now = _now()
    files = dict(manifest.get("files", {}))
    for outcome in result.outcomes:
        name = outcome.item.target.name
        if outcome.status == "fetched":
            files[name] = {"path": outcome.item.path, "url": outcome.item.url, "bytes": outcome.bytes,
                           "sha256": outcome.sha256, "fetched_at": now}
        elif outcome.status == "present" and files.get(name, {}).get("path") != outcome.item.path:
            # Found in place (copied in by hand, or recorded under another path): record what was checked.
            files[name] = {"path": outcome.item.path, "url": outcome.item.url, "bytes": outcome.bytes,
                           "checked_at": now}
    updated = {
        "version": MANIFEST_VERSION,
        "base_url": options.base_url,
        "updated_at": now,
        "last_run": {
            "files": len(result.outcomes),
            "fetched": len(result.fetched),
            "present": len(result.present),
            "replaced_damaged": len(result.replaced),
            "failed": len(result.failures),
            "bytes_fetched": result.bytes_fetched,
            "seconds": round(result.seconds, 3),
            "interrupted": result.interrupted,
        },
        "files": dict(sorted(files.items())),
    }
    atomic_write_json(result.manifest_json, updated)
    atomic_write_csv(result.failures_csv, ("path", "url", "reason"),
                     ((o.item.path, o.item.url, o.reason) for o in result.failures))
