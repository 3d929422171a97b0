"""Cache folders and verified downloads of registered weights.

Weights on the Hugging Face hub are fetched with the hub's own client (``huggingface_hub.hf_hub_download``, as
anatomix's anatomix/model/load_from_hf.py and timm do): at the entry's pinned commit, with the user's token (HF_TOKEN
or ``hf auth login``) for gated repositories, into the hub's shared cache (HF_HOME, HF_HUB_CACHE; HF_ENDPOINT for a
mirror), and resumed with Range requests when a transfer breaks off (huggingface_hub file_download.py ``http_get``).
Other URLs go through nnFM's own download into ``cache_dir()``. Either way the sha256 is checked before use.
"""
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nnfm.errors import ChecksumMismatchError, WeightsUnavailableError

# the hub's file URL (huggingface_hub constants.HUGGINGFACE_CO_URL_TEMPLATE: {endpoint}/{repo_id}/resolve/{revision}/
# {filename}); model repositories only, the only kind the registry holds
HUB_URL = re.compile(r"^https://huggingface\.co/(?P<repo>[\w.-]+/[\w.-]+)/resolve/(?P<revision>[^/]+)/"
                     r"(?P<filename>.+)$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def cache_dir() -> Path:
    """nnFM's cache of downloads from outside the hub, and where a file fetched by hand may be put for any entry."""
    return Path(os.environ.get("nnFM_weights_cache") or Path.home() / ".cache" / "nnfm" / "weights")


@dataclass(frozen=True)
class HubFile:
    repo_id: str
    filename: str
    revision: str

    @property
    def pinned(self) -> bool:
        return bool(COMMIT.match(self.revision))

    @property
    def page(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    def command(self, *extra: str) -> str:
        """The hub CLI line that fetches this file into the same cache."""
        return " ".join(["hf download", self.repo_id, self.filename, "--revision", self.revision, *extra])


def hub_file(entry) -> Optional[HubFile]:
    """Where ``entry`` lies on the Hugging Face hub (its ``revision`` over the URL's branch), or None."""
    match = HUB_URL.match(entry.url or "")
    if match is None or entry.embedded:
        return None
    return HubFile(match["repo"], urllib.parse.unquote(match["filename"]), entry.revision or match["revision"])


def cached_file(entry) -> Optional[Path]:
    """The entry's file if it is here already, without any network: in nnFM's cache (put there by hand, or downloaded
    by an nnFM before the hub client was used), else in the hub's cache at the entry's revision (a branch: the commit
    it resolved to at the last download)."""
    local = cache_dir() / entry.filename
    if local.is_file():
        return local
    hub = hub_file(entry)
    if hub is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub.repo_id, hub.filename, revision=hub.revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


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


def _commit_of(path: Path) -> Optional[str]:
    """The commit of a file in the hub's cache (HF_HUB_CACHE/models--ORG--NAME/snapshots/<commit>/FILE)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def _hub_failure(entry, hub: HubFile, error: Exception) -> str:
    """What went wrong with a hub download, and the fix, by the hub client's error type (huggingface_hub.errors)."""
    from huggingface_hub import errors

    # huggingface_hub < 1.0 has no RemoteEntryNotFoundError: its EntryNotFoundError is the hub's 404
    remote_missing = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)
    what = f"Pretrained weights '{entry.name}' ({hub.filename} of {hub.repo_id}, revision {hub.revision})"
    by_hand = (f"Or download {entry.url} yourself and put it at {cache_dir() / entry.filename} (or set "
               f"nnFM_weights_cache to the folder that holds {entry.filename}, or pass a local path).")
    if isinstance(error, errors.LocalEntryNotFoundError):  # an EntryNotFoundError too: test it first
        reason = ("no connection to the hub, and the file is not in its cache (HF_HOME); offline, HF_HUB_OFFLINE=1 "
                  "skips the hub client's retries")
    elif isinstance(error, errors.GatedRepoError):  # a RepositoryNotFoundError too: test it first
        return (f"{what}: {hub.repo_id} is gated: its authors grant access per account. Fix: sign in at {hub.page}, "
                f"accept its terms, then give huggingface_hub a read token (https://huggingface.co/settings/tokens): "
                f"export HF_TOKEN=hf_... or run `hf auth login`, and run this again. {by_hand}")
    elif isinstance(error, (errors.RevisionNotFoundError, remote_missing, errors.RepositoryNotFoundError)):
        return (f"{what}: not found on the hub ({type(error).__name__}: {str(error).splitlines()[0]}). The repository, "
                f"the file or the revision the registry names is gone or private (a private repository needs "
                f"HF_TOKEN). Fix: check {hub.page}; pin the registry entry (nnfm/weights/registry.py) to a revision "
                f"that has {hub.filename}. {by_hand}")
    else:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return (f"{what} are not in the cache and could not be downloaded ({reason}).\nOn a machine with access, fetch "
            f"it into the hub's cache (HF_HOME) and copy that folder here:\n    $ {hub.command()}\n{by_hand}")


def _hub_resolves(huggingface_hub) -> bool:
    """Whether the hub's host name resolves. Without a network (no DNS) the hub client retries for about 23 s before
    it gives up (measured here, huggingface_hub 2.4); then nnFM asks its cache only (``local_files_only``), which
    fails at once with the same LocalEntryNotFoundError when the file is not there."""
    import socket

    host = urllib.parse.urlparse(huggingface_hub.constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return False
    return True


def download_from_hub(entry, hub: HubFile, timeout: float = 30.0) -> Path:
    """``hf_hub_download`` at the entry's revision into the hub's shared cache; returns the cached file once its
    sha256 matches. The hub client resumes a broken transfer and reads HF_TOKEN / the stored login itself."""
    import huggingface_hub

    try:
        path = Path(huggingface_hub.hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision,
                                                    etag_timeout=timeout,
                                                    local_files_only=not _hub_resolves(huggingface_hub)))
    except Exception as error:  # any failure of the transfer: named, with the fix, by _hub_failure
        raise WeightsUnavailableError(_hub_failure(entry, hub, error)) from None
    actual = sha256_of(path)
    try:
        verify_sha256(entry, actual, f"'{entry.name}' from the hub ({hub.repo_id}, revision {hub.revision}) at {path}")
    except ChecksumMismatchError as error:
        raise ChecksumMismatchError(
            f"{error} It was not used. Fix: fetch it again (a broken transfer):\n    $ "
            f"{hub.command('--force-download')}\n" + ("" if hub.pinned else
            "  If it differs again, the repository changed after the sha256 was recorded: pin the entry's revision "
            "(nnfm/weights/registry.py) to the commit the sha256 belongs to.")) from None
    commit = _commit_of(path)
    if not hub.pinned and commit:  # a branch moves: say which commit this file is, so that it can be pinned
        warnings.warn(f"'{entry.name}' came from {hub.repo_id} at revision {hub.revision}, commit {commit}; to always "
                      f"get this file, pin it in nnfm/weights/registry.py: revision='{commit}'.")
    _warn_unverified(entry, actual)
    return path


def _warn_unverified(entry, actual: str) -> None:
    if entry.sha256 is None and entry.sha256_prefix:
        warnings.warn(f"'{entry.name}': only the sha256 prefix {entry.sha256_prefix} is published; it matches "
                      f"(sha256 {actual}).")
    elif entry.sha256 is None:
        warnings.warn(f"'{entry.name}' has no published sha256: downloaded file is UNVERIFIED (sha256 {actual}).")


def download_entry(entry, timeout: float = 30.0) -> Path:
    """Download ``entry``, verifying its sha256: from the Hugging Face hub with its client (``download_from_hub``),
    else into nnFM's cache (temp file + atomic rename)."""
    hub = hub_file(entry)
    if hub is not None:
        return download_from_hub(entry, hub, timeout)
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
    _warn_unverified(entry, actual)
    os.replace(tmp, target)
    return target
