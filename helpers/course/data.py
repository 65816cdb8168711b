"""Data-set files: local copy first, else a verified download (introduced in 06_char_gpt)."""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from helpers.course.utils import DATA_DIR, atomic_write_bytes, relative


@dataclass(frozen=True)
class DataFile:
    """A data file the course uses: where it lives locally, where it comes from, and its checksum."""

    filename: str
    url: str | None
    sha256: str | None
    size: int | None = None


DATASETS = {
    "tinyshakespeare": DataFile(
        "tinyshakespeare.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        1_115_394,
    ),
    # The shortest pairs of the Tatoeba/Anki fra-eng export; it ships in data/ (CC-BY 2.0 FR, see data/README.md).
    "eng-fra-small": DataFile(
        "eng-fra-tatoeba-small.tsv",
        None,
        "5115bf4ec908982ea20bd39f7807316782fdf9ae489ec3389a002a63e3c8f463",
        509_465,
    ),
}


class DataUnavailableError(RuntimeError):
    """Raised when a data file is neither present locally nor downloadable."""


def sha256_of(data: bytes) -> str:
    """Return the hex SHA-256 digest of some bytes."""
    return hashlib.sha256(data).hexdigest()


def download(url: str, sha256: str | None, dest: Path, timeout: float = 30.0) -> Path:
    """Download url over HTTPS with a timeout, check its SHA-256, and write it atomically to dest."""
    if not url.startswith("https://"):
        raise ValueError(f"refusing to download over a non-HTTPS URL: {url}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - https checked above
        data = response.read()  # raises http.client.IncompleteRead when the connection drops early
        expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and len(data) != int(expected):
        raise DataUnavailableError(
            f"download of {url} was cut off: {len(data):,} of {int(expected):,} bytes; nothing was written"
        )
    if sha256 is not None and sha256_of(data) != sha256:
        raise ValueError(f"checksum mismatch for {url}: got {sha256_of(data)}, expected {sha256}; nothing was written")
    return atomic_write_bytes(dest, data)


def fetch(name: str, data_dir: Path | None = None, timeout: float = 30.0, verify_local: bool = True) -> Path:
    """Return the path of a data set file, using data/ when present and downloading it otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    spec = DATASETS[name]
    dest = Path(data_dir or DATA_DIR) / spec.filename
    if dest.exists():
        if verify_local and spec.sha256 is not None and sha256_of(dest.read_bytes()) != spec.sha256:
            remedy = (
                "delete it and run again to download a fresh copy"
                if spec.url is not None
                else "restore the copy that ships with the course: git checkout -- " + relative(dest)
            )
            raise ValueError(f"{relative(dest)} does not match its SHA-256 checksum {spec.sha256}; {remedy}")
        return dest
    where = f"put the file at {relative(dest)}"
    if spec.url is None:
        raise DataUnavailableError(
            f"{spec.filename} not found. It ships with the course and has no download of its "
            f"own: restore it (git checkout -- {relative(dest)}) or {where} "
            f"(see data/README.md)."
        )
    try:
        return download(spec.url, spec.sha256, dest, timeout=timeout)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError, DataUnavailableError) as err:
        raise DataUnavailableError(
            f"could not download {spec.url} ({err}). Offline? Then {where} (see data/README.md)."
        ) from err
