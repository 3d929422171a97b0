"""Registry downloads against a local HTTP server on 127.0.0.1 (never any other address)."""
import json
import hashlib
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

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
