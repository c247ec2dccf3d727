"""fetch_dataset against a local HTTP server (no test reaches the internet)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from privfl.data import fetch as fetch_module
from privfl.data.fetch import REMOTE_FILES, RemoteFile, fetch_dataset
from privfl.errors import DataError, IntegrityError


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail fast, instead of going online, if a test ever connects anywhere but localhost."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"test tried to connect to {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@dataclass
class Server:
    url: str
    root: Path
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path == "/short":
            # Promise 1000 bytes, send 10, hang up.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/endless":
            # No Content-Length, then far more bytes than the manifest expects.
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"x" * 4096)
            self.close_connection = True
            return
        if self.path == "/huge":
            # Announce 10 GB (and send nothing): refused before any byte is written.
            self.send_response(200)
            self.send_header("Content-Length", str(10 << 30))
            self.end_headers()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []
    handler = partial(type("H", (_Handler,), {"requests": requests}), directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(
            url=f"http://127.0.0.1:{httpd.server_address[1]}/", root=root, requests=requests
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(server: Server, name: str, data: bytes, *, sha: str | None = None) -> RemoteFile:
    (server.root / name).write_bytes(data)
    return RemoteFile(name=name, url=server.url + name, sha256=sha or _sha(data))


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ------------------------------------------------------------------ downloads and skips


def test_fetch_downloads_checks_and_then_skips(server: Server, tmp_path: Path) -> None:
    blobs = {"a.bin": bytes(range(256)) * 5000, "b.txt": b"hello privfl\n"}  # 1.28 MB, 13 B
    manifest = tuple(_serve(server, n, d) for n, d in blobs.items())
    dest = tmp_path / "dest" / "nested"
    paths = fetch_dataset("mnist", dest, files=manifest, progress=False)
    assert paths == [dest / "a.bin", dest / "b.txt"]
    for name, data in blobs.items():
        assert (dest / name).read_bytes() == data
    assert _leftovers(dest) == ["a.bin", "b.txt"]
    assert server.requests == ["/a.bin", "/b.txt"]
    mtimes = [p.stat().st_mtime_ns for p in paths]

    again = fetch_dataset("mnist", dest, files=manifest, progress=False)
    assert again == paths
    assert server.requests == ["/a.bin", "/b.txt"]  # nothing requested the second time
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_fetch_with_progress_bar(server: Server, tmp_path: Path) -> None:
    data = b"x" * 300_000
    manifest = (_serve(server, "c.bin", data),)
    fetch_dataset("mnist", tmp_path / "d", files=manifest, progress=True)
    assert (tmp_path / "d" / "c.bin").read_bytes() == data


def test_fetch_replaces_a_present_file_with_the_wrong_digest(
    server: Server, tmp_path: Path
) -> None:
    data = b"the right content"
    manifest = (_serve(server, "f.bin", data),)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "f.bin").write_bytes(b"stale content")
    fetch_dataset("mnist", dest, files=manifest, progress=False)
    assert (dest / "f.bin").read_bytes() == data
    assert server.requests == ["/f.bin"]


def test_digest_mismatch_raises_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    good = b"published content"
    remote = _serve(server, "corrupt.bin", b"tampered content", sha=_sha(good))
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError) as info:
        fetch_dataset("mnist", dest, files=(remote,), progress=False)
    message = str(info.value)
    assert "corrupt.bin" in message
    assert remote.url in message
    assert _sha(good) in message
    assert _sha(b"tampered content") in message
    assert _leftovers(dest) == []


def test_mirror_with_canonical_mnist_manifest_rejects_a_fake(
    server: Server, tmp_path: Path
) -> None:
    fake = gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 100)
    (server.root / "train-images-idx3-ubyte.gz").write_bytes(fake)
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError) as info:
        fetch_dataset("mnist", dest, mirror=server.url.rstrip("/"), progress=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert REMOTE_FILES["mnist"][0].sha256 in message
    assert server.url + "train-images-idx3-ubyte.gz" in message
    assert server.requests == ["/train-images-idx3-ubyte.gz"]
    assert _leftovers(dest) == []


def test_http_404_names_the_url_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    remote = RemoteFile("missing.bin", server.url + "missing.bin", "0" * 64)
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        fetch_dataset("mnist", dest, files=(remote,), progress=False)
    assert not isinstance(info.value, IntegrityError)
    assert remote.url in str(info.value)
    assert "404" in str(info.value)
    assert _leftovers(dest) == []


def test_connection_closed_early_leaves_nothing(server: Server, tmp_path: Path) -> None:
    remote = RemoteFile("short", server.url + "short", "0" * 64)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="short") as info:
        fetch_dataset("mnist", dest, files=(remote,), progress=False)
    assert not isinstance(info.value, IntegrityError)
    assert _leftovers(dest) == []


def test_refused_connection_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = RemoteFile("x.bin", f"http://127.0.0.1:{port}/x.bin", "0" * 64)
    with pytest.raises(DataError, match=f"127.0.0.1:{port}/x.bin"):
        fetch_dataset("mnist", tmp_path / "dest", files=(remote,), progress=False, timeout=5)
    assert _leftovers(tmp_path / "dest") == []


def test_interrupt_mid_download_leaves_nothing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = _serve(server, "big.bin", b"y" * 3_000_000)

    def interrupt(self: object, n: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_module._LogProgress, "advance", interrupt)
    dest = tmp_path / "dest"
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset("mnist", dest, files=(remote,), progress=False)
    assert _leftovers(dest) == []


# ------------------------------------------------------------------ archives


def _targz(members: dict[str, bytes], *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return buf.getvalue()


def _extract_remote(server: Server, blob: bytes) -> RemoteFile:
    remote = _serve(server, "pack.tar.gz", blob)
    return RemoteFile(remote.name, remote.url, remote.sha256, extract=True)


def test_good_archive_is_extracted_once(server: Server, tmp_path: Path) -> None:
    members = {"pack/one.txt": b"first", "pack/sub/two.bin": b"\x00\x01\x02"}
    remote = _extract_remote(server, _targz(members))
    dest = tmp_path / "dest"
    paths = fetch_dataset("cifar10", dest, files=(remote,), progress=False)
    assert paths == [dest / "pack.tar.gz"]
    for name, data in members.items():
        assert (dest / name).read_bytes() == data

    # Already extracted: a second fetch neither downloads nor unpacks again.
    (dest / "pack" / "one.txt").write_bytes(b"edited")
    fetch_dataset("cifar10", dest, files=(remote,), progress=False)
    assert (dest / "pack" / "one.txt").read_bytes() == b"edited"
    assert server.requests == ["/pack.tar.gz"]

    # A missing member means the extraction is incomplete: unpack again.
    (dest / "pack" / "sub" / "two.bin").unlink()
    fetch_dataset("cifar10", dest, files=(remote,), progress=False)
    assert (dest / "pack" / "sub" / "two.bin").read_bytes() == b"\x00\x01\x02"


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("members", "extra", "reason"),
    [
        ({"ok.txt": b"fine", "../evil": b"boom"}, None, "escapes"),
        ({"ok.txt": b"fine", "a/../../evil": b"boom"}, None, "escapes"),
        ({"ok.txt": b"fine", "/tmp/privfl-evil-abs": b"boom"}, None, "absolute"),
        ({"ok.txt": b"fine"}, [_symlink("link", "/etc/passwd")], "link"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink"],
)
def test_unsafe_archive_is_rejected_before_extracting_anything(
    server: Server,
    tmp_path: Path,
    members: dict[str, bytes],
    extra: list[tarfile.TarInfo] | None,
    reason: str,
) -> None:
    remote = _extract_remote(server, _targz(members, extra=extra))
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=reason) as info:
        fetch_dataset("cifar10", dest, files=(remote,), progress=False)
    assert "pack.tar.gz" in str(info.value)
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/privfl-evil-abs").exists()
    # The verified archive stays; nothing from it was unpacked.
    assert _leftovers(dest) == ["pack.tar.gz"]


def test_fetched_archive_feeds_the_cifar10_loader(server: Server, tmp_path: Path) -> None:
    import pickle

    import numpy as np

    from privfl.data.cifar10 import load_cifar10

    members = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        doc = {b"data": np.full((1, 3072), i, np.uint8), b"labels": [i]}
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(doc, protocol=2)
    remote = _extract_remote(server, _targz(members))
    fetch_dataset("cifar10", tmp_path, files=(remote,), progress=False)
    bundle = load_cifar10(tmp_path)
    assert bundle.train.y.tolist() == [0, 1, 2, 3, 4]
    assert bundle.test.y.tolist() == [5]
    assert bundle.train.x[3].unique().tolist() == [pytest.approx(3 / 255)]


# ------------------------------------------------------------------ names


def test_femnist_is_not_downloadable_and_says_why(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        fetch_dataset("femnist", tmp_path)
    assert "preprocess.sh -s niid --sf 0.05 -k 0 -t sample" in str(info.value)
    assert "TalwalkarLab/leaf" in str(info.value)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_local_data_sets_need_no_download(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match=f"{name} .*needs no download"):
        fetch_dataset(name, tmp_path)


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        fetch_dataset("imagenet", tmp_path)
    message = str(info.value)
    assert "'imagenet'" in message
    for known in ("mnist", "cifar10", "femnist", "digits", "synthetic"):
        assert known in message


def test_manifest_digests_are_well_formed() -> None:
    assert [f.name for f in REMOTE_FILES["mnist"]] == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    for files in REMOTE_FILES.values():
        for f in files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0
            assert f.url.startswith("https://") and f.url.endswith("/" + f.name)
    assert REMOTE_FILES["cifar10"][0].extract


def test_cli_fetch_rejects_a_corrupted_file_with_exit_2(server: Server, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from privfl.cli import app

    fake = gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 100)
    (server.root / "train-images-idx3-ubyte.gz").write_bytes(fake)
    dest = tmp_path / "dest"
    r = CliRunner().invoke(
        app, ["data", "fetch", "mnist", "--dir", str(dest), "--mirror", server.url, "-q"]
    )
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "train-images-idx3-ubyte.gz" in text and "Traceback" not in r.output
    assert _leftovers(dest) == []


# ------------------------------------------------------------------ hostile servers and folders


def test_a_download_without_content_length_stops_at_the_cap(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    remote = RemoteFile("big.bin", server.url + "endless", "0" * 64, max_bytes=10_000)
    with pytest.raises(DataError, match="more than 10000 bytes"):
        fetch_dataset("mnist", dest, files=(remote,), progress=False)
    assert _leftovers(dest) == []


def test_an_announced_size_above_the_cap_is_refused(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    remote = RemoteFile("big.bin", server.url + "huge", "0" * 64, max_bytes=10_000)
    with pytest.raises(DataError, match="announces"):
        fetch_dataset("mnist", dest, files=(remote,), progress=False)
    assert _leftovers(dest) == []


def test_the_manifest_caps_every_file_near_its_published_size() -> None:
    for files in REMOTE_FILES.values():
        for f in files:
            assert f.max_bytes < 200_000_000  # CIFAR-10's 170 MB archive is the largest


def test_a_symlink_at_the_partial_path_is_not_followed(server: Server, tmp_path: Path) -> None:
    data = b"the real file" * 100
    remote = _serve(server, "a.bin", data)
    dest = tmp_path / "dest"
    dest.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (dest / "a.bin.part").symlink_to(victim)
    fetch_dataset("mnist", dest, files=(remote,), progress=False)
    assert victim.read_bytes() == b"precious"
    assert (dest / "a.bin").read_bytes() == data and not (dest / "a.bin").is_symlink()
    assert _leftovers(dest) == ["a.bin"]
