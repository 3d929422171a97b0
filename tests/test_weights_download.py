"""Registry downloads against a local HTTP server on 127.0.0.1 (never any other address)."""
import hashlib
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from conftest import LAYOUTS, random_state_dict_from_layout
from nnfm.errors import ChecksumMismatchError, WeightsUnavailableError
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
