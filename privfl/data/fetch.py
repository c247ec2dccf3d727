"""Download of the public data sets, checked against published SHA-256 digests.

A file is streamed to ``<name>.part`` while its digest is computed, and renamed to its final
name only when the digest matches; whatever goes wrong (an HTTP error, a dropped connection,
a digest mismatch, Ctrl-C), no ``.part`` file and no partial final file is left behind.
Archives (``extract=True``) are unpacked after the check, refusing members that would land
outside the destination folder or that are links or special files.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from rich.progress import TaskID

from privfl.data.femnist import LEAF_HINT
from privfl.errors import DataError, IntegrityError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "privfl-data-fetch/0.1"


@dataclass(frozen=True)
class RemoteFile:
    """A file to download.

    Attributes:
        name: the file name in the destination folder.
        url: where to download it from.
        sha256: its published SHA-256 digest, 64 hex digits.
        extract: whether it is a ``.tar.gz`` archive to unpack into the destination folder.
        max_bytes: the most bytes accepted; a server that sends more (with or without a
            ``Content-Length``) is cut off, so a hostile or broken mirror cannot fill the disk.
            The manifest's files set it a little above their published size.
    """

    name: str
    url: str
    sha256: str
    extract: bool = False
    max_bytes: int = 1 << 30


def _cap(published: int) -> int:
    """A download cap 10% above a file's published size (the digest decides the rest)."""
    return published + published // 10 + 4096


_MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"

REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": (
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            _MNIST_BASE + "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            max_bytes=_cap(9912422),
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz",
            _MNIST_BASE + "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            max_bytes=_cap(28881),
        ),
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            _MNIST_BASE + "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            max_bytes=_cap(1648877),
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            _MNIST_BASE + "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            max_bytes=_cap(4542),
        ),
    ),
    "cifar10": (
        RemoteFile(
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            extract=True,
            max_bytes=_cap(170_498_071),
        ),
    ),
}

#: data sets that ship with privfl or are generated, so nothing is downloaded.
_LOCAL_DATASETS: dict[str, str] = {
    "digits": "is bundled with scikit-learn",
    "synthetic": "is generated on the fly from the seed",
}

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class _Progress(Protocol):
    def start(self, name: str, total: int | None) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


class _LogProgress:
    """Progress reported through ``logging`` (used when ``progress=False``)."""

    def __init__(self) -> None:
        self._name = ""
        self._done = 0

    def start(self, name: str, total: int | None) -> None:
        self._name, self._done = name, 0
        size = f"{total} bytes" if total is not None else "unknown size"
        logger.info("downloading %s (%s)", name, size)

    def advance(self, n: int) -> None:
        self._done += n

    def finish(self) -> None:
        logger.info("downloaded %s (%d bytes)", self._name, self._done)


class _RichProgress:
    """A rich progress bar on stderr with bytes done, total and speed."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task: TaskID | None = None

    def __enter__(self) -> _RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def start(self, name: str, total: int | None) -> None:
        self._task = self._bar.add_task(name, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)

    def finish(self) -> None:
        self._task = None


@contextmanager
def _progress(enabled: bool) -> Iterator[_Progress]:
    if not enabled:
        yield _LogProgress()
        return
    with _RichProgress() as bar:
        yield bar


def sha256_file(path: Path) -> str:
    """Return the SHA-256 digest of the file at ``path`` as 64 lowercase hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _manifest(name: str) -> tuple[RemoteFile, ...]:
    if name == "femnist":
        raise DataError(f"femnist cannot be downloaded as JSON. {LEAF_HINT}")
    if name in _LOCAL_DATASETS:
        raise DataError(f"{name} {_LOCAL_DATASETS[name]} and needs no download")
    if name not in REMOTE_FILES:
        known = sorted([*REMOTE_FILES, "femnist", *_LOCAL_DATASETS])
        raise DataError(
            f"unknown data set {name!r}; known data sets are {', '.join(known)} "
            f"(downloadable: {', '.join(sorted(REMOTE_FILES))})"
        )
    return REMOTE_FILES[name]


def _source_url(remote: RemoteFile, mirror: str | None) -> str:
    if mirror is None:
        return remote.url
    file_name = remote.url.rstrip("/").rsplit("/", 1)[-1]
    return mirror.rstrip("/") + "/" + file_name


def _check_name(remote: RemoteFile) -> None:
    if not remote.name or remote.name in (".", "..") or "/" in remote.name or "\\" in remote.name:
        raise DataError(f"remote file name {remote.name!r} must be a plain file name")
    if not _SHA256_RE.match(remote.sha256):
        raise DataError(
            f"the SHA-256 digest of {remote.name} is {remote.sha256!r}; expected 64 hex digits"
        )


def _open_part(part: Path) -> BinaryIO:
    """Open the partial file ``part`` for writing without following a link at its path:
    whatever is there (a stale ``.part``, or a symlink planted to make the download overwrite
    another file) is removed, then the file is created exclusively with ``O_NOFOLLOW``."""
    part.unlink(missing_ok=True)  # removes a link itself, never its target
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as e:
        raise DataError(f"cannot create {part} (exclusively, not through a link): {e}") from e
    return os.fdopen(fd, "wb")


def _download(
    remote: RemoteFile, url: str, final: Path, *, progress: _Progress, timeout: float
) -> None:
    """Stream ``url`` to ``final`` via ``final.part``, checking its SHA-256 digest."""
    part = final.with_name(final.name + ".part")
    expected = remote.sha256.lower()
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    total: int | None = None
    try:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if total is not None and total > remote.max_bytes:
                    raise DataError(
                        f"refusing {url}: it announces {total} bytes, more than the "
                        f"{remote.max_bytes} expected of {remote.name}"
                    )
                with _open_part(part) as out:
                    progress.start(remote.name, total)
                    while chunk := response.read(_CHUNK):
                        received += len(chunk)
                        if received > remote.max_bytes:
                            raise DataError(
                                f"download of {url} stopped: more than {remote.max_bytes} "
                                f"bytes, the most expected of {remote.name}"
                            )
                        digest.update(chunk)
                        out.write(chunk)
                        progress.advance(len(chunk))
                    progress.finish()
        except DataError:
            raise
        except urllib.error.HTTPError as e:
            raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
        except urllib.error.URLError as e:
            raise DataError(f"download of {url} failed: {e.reason}") from e
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"download of {url} to {part} failed: {e!r}") from e
        except ValueError as e:  # e.g. "unknown url type"
            raise DataError(f"cannot download {url}: {e}") from e
        if total is not None and received != total:
            raise DataError(
                f"download of {url} was cut short: received {received} of {total} bytes"
            )
        actual = digest.hexdigest()
        if actual != expected:
            raise IntegrityError(
                f"{remote.name} downloaded from {url} fails its SHA-256 check: "
                f"expected {expected}, got {actual}; the file was deleted"
            )
        os.replace(part, final)
    finally:
        part.unlink(missing_ok=True)


def _member_problem(member: tarfile.TarInfo, root: str) -> str | None:
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    target = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, target]) != root:
        return "escapes the destination folder"
    if member.issym() or member.islnk():
        return "is a link"
    if not (member.isfile() or member.isdir()):
        return "is a special file"
    return None


def _marker(directory: Path, remote: RemoteFile) -> Path:
    return directory / f".{remote.name}.extracted"


def _already_extracted(directory: Path, remote: RemoteFile) -> bool:
    marker = _marker(directory, remote)
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("sha256") != remote.sha256.lower():
        return False
    members = record.get("files")
    return isinstance(members, list) and all((directory / m).is_file() for m in members)


def _extract(archive: Path, directory: Path, remote: RemoteFile) -> None:
    """Unpack the tar.gz ``archive`` into ``directory`` after checking every member."""
    if _already_extracted(directory, remote):
        logger.info("%s is already extracted in %s", archive.name, directory)
        return
    root = os.path.realpath(directory)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                problem = _member_problem(member, root)
                if problem is not None:
                    raise DataError(
                        f"refusing to extract {archive}: member {member.name!r} {problem}"
                    )
            logger.info("extracting %s into %s", archive.name, directory)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(directory, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.10.12 / 3.11.4 without extraction filters
                tar.extractall(directory, members=members)
    except (tarfile.TarError, EOFError) as e:
        raise DataError(f"cannot extract {archive}: {e}") from e
    except OSError as e:
        raise DataError(f"cannot extract {archive} into {directory}: {e}") from e
    files = [m.name for m in members if m.isfile()]
    record = {"sha256": remote.sha256.lower(), "files": files}
    _marker(directory, remote).write_text(json.dumps(record), encoding="utf-8")


def fetch_dataset(
    name: str,
    directory: str | Path,
    *,
    mirror: str | None = None,
    files: tuple[RemoteFile, ...] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the files of data set ``name`` into ``directory`` and check their digests.

    Args:
        name: ``"mnist"`` or ``"cifar10"``. ``"femnist"``, ``"digits"`` and ``"synthetic"``
            raise a :class:`DataError` explaining why nothing is downloaded.
        directory: the destination folder, created if missing.
        mirror: when given, replaces everything before the file name in each URL (for example
            ``"http://127.0.0.1:8000/"``).
        files: a manifest used instead of ``REMOTE_FILES[name]`` (then ``name`` may be any
            label but the three above).
        progress: show a rich progress bar on stderr; otherwise report through ``logging``.
        timeout: seconds to wait for the server on connection and on each read.

    Returns:
        The paths of the downloaded files (``directory / file.name``), in manifest order.
        A file already present with the right digest is not downloaded again; an archive
        marked ``extract`` is unpacked into ``directory`` unless that was done before.

    Raises:
        IntegrityError: a downloaded file does not match its digest (the message names the
            file, the URL and both digests; nothing is kept).
        DataError: unknown or non-downloadable ``name``, an HTTP or connection error (the
            message names the URL), or an unsafe or corrupt archive.
    """
    if files is None:
        manifest = _manifest(name)
    else:
        if name == "femnist" or name in _LOCAL_DATASETS:
            _manifest(name)  # raises the explanation
        manifest = tuple(files)
    for remote in manifest:
        _check_name(remote)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {directory}: {e}") from e

    paths: list[Path] = []
    with _progress(progress) as bar:
        for remote in manifest:
            final = directory / remote.name
            url = _source_url(remote, mirror)
            if final.is_file():
                actual = sha256_file(final)
                if actual == remote.sha256.lower():
                    logger.info("%s is present with the right digest; skipping", final)
                else:
                    logger.warning(
                        "%s is present but its SHA-256 is %s, expected %s; downloading again",
                        final,
                        actual,
                        remote.sha256.lower(),
                    )
                    _download(remote, url, final, progress=bar, timeout=timeout)
            else:
                _download(remote, url, final, progress=bar, timeout=timeout)
            if remote.extract:
                _extract(final, directory, remote)
            paths.append(final)
    return paths


__all__ = ["REMOTE_FILES", "RemoteFile", "fetch_dataset", "sha256_file"]
