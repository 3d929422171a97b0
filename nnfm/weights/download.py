"""Cache folder and verified downloads of registered weights."""
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from nnfm.errors import ChecksumMismatchError, WeightsUnavailableError


def cache_dir() -> Path:
    return Path(os.environ.get("nnFM_weights_cache") or Path.home() / ".cache" / "nnfm" / "weights")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path, timeout: float) -> None:
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(target, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))


def verify_sha256(entry, actual: str, what: str) -> None:
    """The one check of a file against its registry entry: the full sha256 where published, else the
    published prefix (torch.hub file names); raises ChecksumMismatchError naming ``what``."""
    if entry.sha256 is not None and actual != entry.sha256:
        raise ChecksumMismatchError(f"{what} has sha256 {actual}, expected {entry.sha256} for '{entry.name}'.")
    prefix = entry.sha256_prefix
    if entry.sha256 is None and prefix and not actual.startswith(prefix):
        raise ChecksumMismatchError(f"{what} has sha256 {actual}, which does not start with the published prefix "
                                    f"{prefix} of '{entry.name}'.")


def download_entry(entry, timeout: float = 30.0) -> Path:
    """Download ``entry`` into the cache (temp file + atomic rename), verifying its sha256."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.filename
    handle, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{entry.filename}.", suffix=".part")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        _fetch(entry.url, tmp, timeout)
    except (urllib.error.URLError, OSError, ValueError) as error:
        tmp.unlink(missing_ok=True)
        raise WeightsUnavailableError(
            f"Pretrained weights '{entry.name}' are not in the cache and could not be downloaded ({error}).\n"
            f"Download {entry.url}\nand put it at {target}\n"
            f"(or set nnFM_weights_cache to the folder that holds {entry.filename}, or pass a local path).") from None
    with open(tmp, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):  # e.g. a file host's confirmation or sign-in page
        tmp.unlink(missing_ok=True)
        raise WeightsUnavailableError(
            f"Pretrained weights '{entry.name}': {entry.url} answered with a web page, not a checkpoint.\n"
            f"{entry.description}\nDownload the file yourself and put it at {target} (or pass its path).")
    actual = sha256_of(tmp)
    try:
        verify_sha256(entry, actual, f"Download of '{entry.name}' from {entry.url}")
    except ChecksumMismatchError as error:
        tmp.unlink(missing_ok=True)
        raise ChecksumMismatchError(f"{error} The file was deleted; try again, or check that the URL still serves "
                                    f"{entry.filename}.") from None
    if entry.sha256 is None and entry.sha256_prefix:
        warnings.warn(f"'{entry.name}': only the sha256 prefix {entry.sha256_prefix} is published; it matches "
                      f"(sha256 {actual}).")
    elif entry.sha256 is None:
        warnings.warn(f"'{entry.name}' has no published sha256: downloaded file is UNVERIFIED (sha256 {actual}).")
    os.replace(tmp, target)
    return target
