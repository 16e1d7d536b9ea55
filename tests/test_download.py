"""`adkit.data.download` against a tiny HTTP server on 127.0.0.1: full and resumed downloads (HTTP Range),
hash mismatch, fast offline failure, safe extraction. No address other than loopback is ever contacted."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from adkit.data import DataError
from adkit.data.download import download, unpack

PAYLOAD = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


ARCHIVE = make_tar({"bottle/train/good/000.png": PAYLOAD, "readme.txt": b"hello"})
SHA = hashlib.sha256(ARCHIVE).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    """Serves ARCHIVE at /data.tar, honouring `Range: bytes=N-` unless `state["range"]` is False."""
    state = {"range": True, "requests": [], "sent": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            rng = self.headers.get("Range")
            state["requests"].append(rng)
            start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and state["range"] else 0
            if start >= len(ARCHIVE):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(ARCHIVE)}")
                self.end_headers()
                return
            body = ARCHIVE[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(ARCHIVE) - 1}/{len(ARCHIVE)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # counted before the write: the client may finish reading, and the test check `sent`, before this
            # handler thread runs its next line (seen once in a parallel test run)
            state["sent"] += len(body)
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/data.tar"
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_and_unpacks(tmp_path, server):
    root = download("mvtec", tmp_path / "mvtec", url=server["url"], sha256=SHA)
    assert (root / "bottle" / "train" / "good" / "000.png").read_bytes() == PAYLOAD
    assert (root / "data.tar").read_bytes() == ARCHIVE and not (root / "data.tar.part").exists()
    assert server["requests"] == [None]


def test_download_resumes_a_part_file(tmp_path, server):
    (tmp_path / "data.tar.part").write_bytes(ARCHIVE[:20_000])  # an interrupted earlier run
    download("visa", tmp_path, url=server["url"], sha256=SHA)
    assert server["requests"] == ["bytes=20000-"] and server["sent"] == len(ARCHIVE) - 20_000
    assert (tmp_path / "bottle" / "train" / "good" / "000.png").read_bytes() == PAYLOAD


def test_download_restarts_when_range_is_ignored(tmp_path, server):
    server["range"] = False
    (tmp_path / "data.tar.part").write_bytes(b"x" * 1000)
    download("visa", tmp_path, url=server["url"], sha256=SHA)
    assert (tmp_path / "data.tar").read_bytes() == ARCHIVE


def test_download_with_complete_part_file(tmp_path, server):
    (tmp_path / "data.tar.part").write_bytes(ARCHIVE)  # server answers 416: nothing left to send
    download("visa", tmp_path, url=server["url"], sha256=SHA)
    assert (tmp_path / "readme.txt").read_bytes() == b"hello"


def test_hash_mismatch_is_an_error(tmp_path, server):
    with pytest.raises(DataError, match="SHA-256 .* is not the expected 00"):
        download("mvtec", tmp_path, url=server["url"], sha256="00" * 32)
    assert not (tmp_path / "bottle").exists()


def test_offline_fails_fast_and_says_what_to_do(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mvtec_anomaly_detection.tar.xz"
    t0 = time.monotonic()
    with pytest.raises(DataError) as err:
        download("mvtec", tmp_path, url=url)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert url in msg and "by hand" in msg and str(tmp_path / "mvtec_anomaly_detection.tar.xz") in msg


def test_realiad_and_unknown_names(tmp_path):
    with pytest.raises(DataError, match="realiad_jsons/realiad_jsons"):
        download("realiad", tmp_path)
    with pytest.raises(DataError, match="no known archive"):
        download("nosuchset", tmp_path)


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/adkit-evil.txt", "a/../../evil.txt"])
def test_unpack_refuses_paths_outside_root(tmp_path, name):
    root = tmp_path / "root"
    root.mkdir()
    archive = tmp_path / "bad.tar"
    archive.write_bytes(make_tar({"ok.txt": b"ok", name: b"evil"}))
    with pytest.raises(DataError, match="outside"):
        unpack(archive, root)
    assert not (tmp_path / "evil.txt").exists() and not (root / "ok.txt").exists()


def test_unpack_refuses_escaping_links_and_zip_slip(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("data/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
        tar.addfile(link)
    (tmp_path / "link.tar").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="data/link"):
        unpack(tmp_path / "link.tar", tmp_path / "root")

    with zipfile.ZipFile(tmp_path / "good.zip", "w") as z:
        z.writestr("cls/train/good/000.png", b"png")
    unpack(tmp_path / "good.zip", tmp_path / "root")
    assert (tmp_path / "root" / "cls" / "train" / "good" / "000.png").read_bytes() == b"png"
    with zipfile.ZipFile(tmp_path / "slip.zip", "w") as z:
        z.writestr("../slip.txt", b"evil")
    with pytest.raises(DataError, match="slip.txt"):
        unpack(tmp_path / "slip.zip", tmp_path / "root")
