"""Registry downloads against a local HTTP server on 127.0.0.1 (never any other address)."""
import json
import hashlib
import socket
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from conftest import LAYOUTS, random_state_dict_from_layout
from nnfm.errors import ChecksumMismatchError, ConfigurationError, WeightsUnavailableError
from nnfm.networks import AnatomixUNet
from nnfm.weights import WeightsEntry, load_pretrained, register_weights, resolve_checkpoint
from nnfm.weights.registry import get_weights_entry, unregister_weights


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("nnFM_weights_cache", str(folder))
    return folder


@pytest.fixture
def entry_factory():
    names = []

    def make(name, url, sha256):
        names.append(name)
        return register_weights(WeightsEntry(name, "anatomix_unet", url, sha256, f"{name}.pth", "test", "test", "test"))
    yield make
    for name in names:
        unregister_weights(name)


def test_registry_has_published_anatomix_entry():
    entry = get_weights_entry("anatomix")
    assert entry.family == "anatomix_unet" and entry.url.startswith("https://") and entry.filename == "anatomix.pth"


def test_download_verifies_checksum_then_uses_the_cache_offline(server, cache, entry_factory):
    served, base, httpd = server
    torch.save(random_state_dict_from_layout(LAYOUTS / "anatomix_unet.json"), served / "good.pth")
    sha = hashlib.sha256((served / "good.pth").read_bytes()).hexdigest()
    entry_factory("test_good", f"{base}/good.pth", sha)
    path, got = resolve_checkpoint("test_good")
    assert got == sha and path == cache / "test_good.pth" and path.is_file()
    assert not list(cache.glob("*.part"))
    httpd.shutdown()  # offline from now on: the cache must serve
    report = load_pretrained(AnatomixUNet(), "test_good")
    assert report.ok and report.sha256 == sha


def test_wrong_checksum_is_refused_and_nothing_is_left_in_the_cache(server, cache, entry_factory):
    served, base, _ = server
    torch.save({"x": torch.zeros(1)}, served / "tampered.pth")
    entry_factory("test_bad", f"{base}/tampered.pth", "0" * 64)
    with pytest.raises(ChecksumMismatchError, match="expected 0000"):
        resolve_checkpoint("test_bad")
    assert not list(cache.iterdir())


def test_offline_download_says_where_to_put_the_file(cache, entry_factory):
    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry_factory("test_offline", f"http://127.0.0.1:{port}/x.pth", "1" * 64)
    with pytest.raises(WeightsUnavailableError) as error:
        resolve_checkpoint("test_offline")
    assert str(cache / "test_offline.pth") in str(error.value)
    assert f"http://127.0.0.1:{port}/x.pth" in str(error.value)


def test_embedded_weights_are_used_offline_and_checked(tmp_path, cache, monkeypatch):
    """An entry shipped in the package is read from the package folder, never downloaded; a wrong hash or a
    missing file is a named error with the fix."""
    import nnfm.weights.registry as registry
    from nnfm.doctor import check_embedded_weights
    from nnfm.weights.embed import embed

    monkeypatch.setattr(registry, "EMBEDDED_DIR", tmp_path)
    # written as a maintainer embeds weights: python -m nnfm.weights.embed SRC NAME --provenance F --folder DIR
    torch.save({"state_dict": random_state_dict_from_layout(LAYOUTS / "anatomix_unet.json")}, tmp_path / "src.pth")
    with pytest.raises(ConfigurationError, match="does not record its input convention.*--input-convention"):
        embed(tmp_path / "src.pth", "tiny_embedded", {"steps": 3}, tmp_path)  # a foreign file: say what it saw
    record = embed(tmp_path / "src.pth", "tiny_embedded", {"steps": 3}, tmp_path, input_convention="window01")
    sha = hashlib.sha256((tmp_path / "tiny_embedded.safetensors").read_bytes()).hexdigest()
    provenance = json.loads((tmp_path / "tiny_embedded.json").read_text())
    assert record["sha256"] == provenance["sha256"] == sha and provenance["steps"] == 3
    assert provenance["unwrapped"] and provenance["fp16_max_relative_rounding_error"] < 2 ** -10
    try:
        register_weights(WeightsEntry("tiny_embedded", "anatomix_unet", "made by a test", sha,
                                      "tiny_embedded.safetensors", "test", "test", "test", embedded=True))
        path, got = resolve_checkpoint("tiny_embedded")
        assert (path, got) == (tmp_path / "tiny_embedded.safetensors", sha) and not cache.exists()
        report = load_pretrained(AnatomixUNet(), "tiny_embedded")       # fp16 file into the fp32 network
        assert report.family == "anatomix_unet" and not report.missing
        assert report.input_convention == provenance["input_convention"] == "window01"  # in the file's metadata
        doctor = [line for line in check_embedded_weights() if "tiny_embedded" in line[1]]
        assert len(doctor) == 1 and doctor[0][0] and sha in doctor[0][1]
        register_weights(WeightsEntry("tiny_embedded", "anatomix_unet", "made by a test", "0" * 64,
                                      "tiny_embedded.safetensors", "test", "test", "test", embedded=True))
        with pytest.raises(ChecksumMismatchError, match="Embedded .*tiny_embedded.safetensors"):
            resolve_checkpoint("tiny_embedded")
        assert [ok for ok, text in check_embedded_weights() if "tiny_embedded" in text] == [False]  # nnFM_doctor
        (tmp_path / "tiny_embedded.safetensors").unlink()
        with pytest.raises(WeightsUnavailableError, match="missing from the installation.*reinstall"):
            resolve_checkpoint("tiny_embedded")
    finally:
        unregister_weights("tiny_embedded")


# ---- weights on the Hugging Face hub: huggingface_hub's client, its shared cache, a pinned revision --------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HUB_URL = "https://huggingface.co/org/weights-repo/resolve/main/w.pth"


class _FakeHub(BaseHTTPRequestHandler):
    """The hub's file endpoint as huggingface_hub uses it (HEAD for commit, etag and size, then GET): /org/weights-repo
    /resolve/<revision>/w.pth. The first GET breaks off half-way, as a dropped connection does; Range requests are
    answered with 206."""
    body = b""
    log: list = []

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def _answer(self, head: bool):
        self.log.append((self.command, self.path, self.headers.get("Authorization"), self.headers.get("Range")))
        if self.path not in (f"/org/weights-repo/resolve/{COMMIT}/w.pth", "/org/weights-repo/resolve/main/w.pth"):
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        body, start = self.body, 0
        ranged = self.headers.get("Range")
        if ranged and not head:
            start = int(ranged.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if head:
            return
        first_get = sum(1 for method, path, *_ in self.log if method == "GET" and path == self.path) == 1
        self.wfile.write(body[start:len(body) // 2] if first_get else body[start:])  # then the connection closes


def test_hub_weights_come_through_huggingface_hub_pinned_with_the_token_resumed_into_hf_home(tmp_path):
    """A fresh process as a user runs it (HF_HOME, HF_TOKEN, HF_ENDPOINT pointing at a local fake of the hub): the
    file is fetched by huggingface_hub at the registry's commit with the user's token, the broken-off transfer is
    resumed with a Range request, the file lands in the hub's shared cache (not nnFM's), its sha256 is checked, and
    a second process finds it there with the hub unreachable."""
    import os
    import subprocess
    import sys

    body = os.urandom(300_000)
    sha = hashlib.sha256(body).hexdigest()
    _FakeHub.body, _FakeHub.log = body, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_TOKEN="hf_user_token", nnFM_weights_cache=str(tmp_path / "nnfm"),
               HF_ENDPOINT=f"http://127.0.0.1:{httpd.server_address[1]}", HF_HUB_DISABLE_TELEMETRY="1")
    script = (
        "import json\n"
        "import huggingface_hub.constants\n"
        "huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = 1 << 16\n"  # 10 MiB: a test file would arrive in one chunk
        "from nnfm.weights import WeightsEntry, register_weights, resolve_checkpoint\n"
        f"register_weights(WeightsEntry('hub_test', 'anatomix_unet', {HUB_URL!r}, {sha!r}, 'hub_test.pth', 't', 't',"
        f" 't', revision={COMMIT!r}))\n"
        "path, sha = resolve_checkpoint('hub_test')\n"
        "print(json.dumps([str(path), sha]))\n")
    try:
        first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert first.returncode == 0, first.stderr[-3000:]
    path, got = json.loads(first.stdout.strip().splitlines()[-1])
    assert got == sha
    assert path == str(tmp_path / "hf_home" / "hub" / "models--org--weights-repo" / "snapshots" / COMMIT / "w.pth")
    requests = [request for request in _FakeHub.log if request[1].startswith("/org/")]  # the client's own calls aside
    assert all(p == f"/org/weights-repo/resolve/{COMMIT}/w.pth" for _, p, _, _ in requests)  # pinned, never main
    assert all(auth == "Bearer hf_user_token" for _, _, auth, _ in requests)
    resumed = [int(r[3][len("bytes="):-1]) for r in requests if r[0] == "GET" and r[3]]
    assert resumed and 0 < resumed[0] <= len(body) // 2, requests  # resumed where the transfer broke off, not restarted
    assert not (tmp_path / "nnfm").exists() or not list((tmp_path / "nnfm").iterdir())
    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1]) == [path, sha], again.stderr


@pytest.fixture
def fake_hub_download(monkeypatch, tmp_path):
    """huggingface_hub.hf_hub_download replaced: records its arguments, writes ``content`` where the hub's cache
    would hold it (or raises ``error``)."""
    import huggingface_hub

    calls, state = [], {"content": b"weights", "error": None, "commit": COMMIT}

    def download(repo_id, filename, **kwargs):
        calls.append(dict(kwargs, repo_id=repo_id, filename=filename))
        if state["error"] is not None:
            raise state["error"]
        path = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / state["commit"] / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(state["content"])
        return str(path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr("nnfm.weights.download._hub_resolves", lambda hub: True)  # as on a machine with a network
    return calls, state


def test_hub_entries_use_hf_hub_download_and_other_urls_keep_the_plain_download(cache, entry_factory,
                                                                              fake_hub_download, server):
    calls, state = fake_hub_download
    sha = hashlib.sha256(b"weights").hexdigest()
    entry_factory("hub_unpinned", HUB_URL, sha)
    with pytest.warns(UserWarning, match=f"revision main, commit {COMMIT}.*revision='{COMMIT}'"):
        path, got = resolve_checkpoint("hub_unpinned")
    assert got == sha and f"snapshots/{COMMIT}/w.pth" in str(path) and not cache.exists()
    assert calls == [dict(repo_id="org/weights-repo", filename="w.pth", revision="main", etag_timeout=30.0,
                          local_files_only=False)]
    served, base, _ = server  # not on the hub: nnFM's own download, as before
    (served / "plain.pth").write_bytes(b"plain")
    entry_factory("plain_url", f"{base}/plain.pth", hashlib.sha256(b"plain").hexdigest())
    assert resolve_checkpoint("plain_url")[0] == cache / "plain_url.pth" and len(calls) == 1


def test_a_hub_file_with_the_wrong_sha256_is_refused_with_the_fix(cache, entry_factory, fake_hub_download):
    calls, state = fake_hub_download
    register_weights(WeightsEntry("hub_bad", "anatomix_unet", HUB_URL, "0" * 64, "hub_bad.pth", "t", "t", "t",
                                  revision=COMMIT))
    try:
        with pytest.raises(ChecksumMismatchError) as error:
            resolve_checkpoint("hub_bad")
    finally:
        unregister_weights("hub_bad")
    assert calls[0]["revision"] == COMMIT
    assert "expected 0000" in str(error.value)
    assert f"hf download org/weights-repo w.pth --revision {COMMIT} --force-download" in str(error.value)


@pytest.mark.parametrize("kind,words", [
    ("gated", ["org/weights-repo is gated", "https://huggingface.co/org/weights-repo", "export HF_TOKEN=",
               "hf auth login"]),
    ("offline", ["could not be downloaded", "hf download org/weights-repo w.pth --revision main", HUB_URL,
                 "hub_offline.pth"]),
    ("missing", ["not found", "org/weights-repo", "revision main"]),
])
def test_hub_failures_name_the_problem_and_the_fix(cache, entry_factory, fake_hub_download, kind, words):
    import httpx2
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RemoteEntryNotFoundError

    calls, state = fake_hub_download
    response = httpx2.Response(403 if kind == "gated" else 404, request=httpx2.Request("HEAD", HUB_URL))
    state["error"] = {"gated": GatedRepoError("Access to model org/weights-repo is restricted.", response=response),
                      "offline": LocalEntryNotFoundError("An error happened while trying to locate the file on the "
                                                         "Hub and we cannot find the requested files in the local "
                                                         "cache."),
                      "missing": RemoteEntryNotFoundError("Entry Not Found for url", response=response)}[kind]
    entry_factory(f"hub_{kind}", HUB_URL, "1" * 64)
    with pytest.raises(WeightsUnavailableError) as error:
        resolve_checkpoint(f"hub_{kind}")
    for word in words:
        assert word in str(error.value), str(error.value)
    if kind == "offline":
        assert str(cache / "hub_offline.pth") in str(error.value)


def test_without_a_network_the_hub_client_asks_its_cache_only_instead_of_retrying(cache, entry_factory, monkeypatch):
    """No DNS (CI, an offline cluster node): huggingface_hub would retry about 23 s before failing; nnFM sees that
    the hub's host does not resolve and asks the hub's cache only (local_files_only), so a cached file is still used
    and a missing one fails at once with the offline advice."""
    import socket

    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename, **kwargs: calls.append(kwargs) or (_ for _ in ()).throw(
                            huggingface_hub.errors.LocalEntryNotFoundError("not in the local cache")))

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    entry_factory("hub_no_dns", HUB_URL, "1" * 64)
    with pytest.raises(WeightsUnavailableError, match="no connection to the hub"):
        resolve_checkpoint("hub_no_dns")
    assert calls[-1]["local_files_only"] is True
