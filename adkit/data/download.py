"""Download and unpack the public dataset archives (MVTec AD, VisA, CIFAR) into a data root.

Resumable: bytes go to `<archive>.part` and a re-run asks the server for the rest (HTTP Range). Checked by
SHA-256 when the hash is known (MVTec AD, VisA, as published by anomalib); otherwise unchecked, as printed.
Unpacked with a safe extract: no member may land outside the root. Offline, it fails within seconds and says
how to fetch the file by hand. Real-IAD is gated behind a request form and cannot be downloaded here.
"""

from __future__ import annotations

import hashlib
import http.client
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse
from urllib.request import Request, urlopen

from .core import DataError

# Official archive URLs (they have moved before and may change again: pass url= / --url with the new one)
# and their SHA-256 (None: unknown, the download is not checked).
ARCHIVES: dict[str, tuple[str, str | None]] = {
    "mvtec": (
        "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
        "420938113-1629952094/mvtec_anomaly_detection.tar.xz",
        "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
    ),
    "visa": (
        "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", None),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", None),
}
TIMEOUT = 5.0  # seconds to connect, and to wait for each read; no retries: re-run to resume
CHUNK = 1 << 20

REALIAD_STEPS = """Real-IAD is distributed on request and cannot be downloaded automatically. To get it:
  1. ask for access on https://realiad4ad.github.io/Real-IAD/ (a form; the download links come by e-mail);
  2. download realiad_jsons.zip and one image archive, e.g. realiad_1024.zip (or realiad_512 / realiad_256);
  3. unzip both into {root}, so that {root}/realiad_jsons/realiad_jsons/<class>.json and
     {root}/realiad_1024/<class>/ exist;
  4. run `adkit check --data realiad --root {root}`."""


def download(
    name: str, root: str | Path, url: str | None = None, sha256: str | None = None, timeout: float = TIMEOUT
) -> Path:
    """Fetch `name`'s archive into `root` (resuming a `.part` file), verify it, unpack it; return root.

    With `url` overridden and no `sha256`, the file is not checked. The archive is kept in `root`.
    """
    root = Path(root)
    if name == "realiad":
        raise DataError(REALIAD_STEPS.format(root=root))
    if url is None:
        if name not in ARCHIVES:
            raise DataError(f"no known archive for {name!r} (known: {', '.join(ARCHIVES)}); pass url=")
        url, sha256 = ARCHIVES[name][0], sha256 or ARCHIVES[name][1]
    root.mkdir(parents=True, exist_ok=True)
    archive = root / (PurePosixPath(unquote(urlparse(url).path)).name or f"{name}.archive")
    if not archive.is_file():
        fetch(url, archive, timeout)
    if sha256:
        verify(archive, sha256)
    else:
        print(f"{archive}: no known SHA-256, not checked")
    unpack(archive, root)
    return root


def fetch(url: str, dest: Path, timeout: float = TIMEOUT) -> None:
    """Download `url` to `dest` through `dest.part`, resuming from the bytes already there."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "adkit", **({"Range": f"bytes={have}-"} if have else {})}
    manual = (
        f"download {url} by hand (browser, wget -c) and put it at {dest}; "
        "if the address moved, pass the new one with url= / --url"
    )
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the .part file is complete
            part.replace(dest)
            return
        raise DataError(f"{url}: HTTP {err.code} {err.reason}; {manual}") from None
    except (URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"{url}: cannot connect ({reason}); offline? {manual}") from None
    with resp:
        resumed = resp.status == 206
        if resumed and not resp.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise DataError(f"{url}: the server sent another byte range than asked; delete {part} and run again")
        print(f"downloading {url} to {dest}" + (f" (resuming after {have} bytes)" if resumed else ""))
        try:
            with open(part, "ab" if resumed else "wb") as f:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
        except (OSError, http.client.HTTPException) as err:
            raise DataError(
                f"{url}: download interrupted ({err}); run again to resume from {part}, or {manual}"
            ) from None
    part.replace(dest)


def verify(path: Path, sha256: str) -> None:
    """Raise unless the file's SHA-256 is `sha256`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    if h.hexdigest() != sha256.lower():
        raise DataError(
            f"{path}: SHA-256 {h.hexdigest()} is not the expected {sha256}; the file is corrupt or "
            "not the official archive: delete it and download again (or pass the right sha256=)"
        )


def _inside(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return target == root or root in target.parents


def unpack(archive: Path, root: Path) -> None:
    """Extract a tar (any compression) or zip archive into `root`, refusing members that would escape it."""
    root = root.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            bad = [n for n in z.namelist() if not _inside(root, n)]
            if bad:
                raise DataError(f"{archive}: refusing to unpack, member {bad[0]!r} would land outside {root}")
            z.extractall(root)
        return
    try:
        tar = tarfile.open(archive, "r:*")
    except tarfile.TarError as err:
        raise DataError(f"{archive}: not a tar or zip archive ({err}); delete it and download again") from None
    with tar:
        for m in tar.getmembers():
            # a symlink's target is relative to its folder, a hard link's to the archive root
            link = str(PurePosixPath(m.name).parent / m.linkname) if m.issym() else m.linkname
            if not _inside(root, m.name) or ((m.issym() or m.islnk()) and not _inside(root, link)) or m.isdev():
                raise DataError(f"{archive}: refusing to unpack member {m.name!r}: outside {root} or a device")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: the standard safe filter as well
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)  # every member checked above
