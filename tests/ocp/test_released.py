"""spinconv-import-ocp with names and URLs: downloads into a cache (served here by a local
HTTP server on 127.0.0.1 that stops by itself), checksums, offline errors."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch

from spinconv_train.commands.import_ocp import main
from spinconv_train.ocp.released import RELEASED, DownloadError, fetch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ocp"
NAME = "reference_spinconv.pt"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """Serves tests/fixtures/ocp on 127.0.0.1; shut down after the test, or after 120 s."""
    handler = functools.partial(_QuietHandler, directory=str(FIXTURES))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    timer = threading.Timer(120.0, httpd.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        timer.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_url_is_downloaded_checked_cached_and_imported(server, tmp_path, capsys):
    url = f"{server}/{NAME}"
    out = tmp_path / "model.pt"
    code = main([url, "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "spinconv" and summary["weights"] == "ema"
    cached = next((tmp_path / "cache").rglob(NAME))
    expected = hashlib.sha256((FIXTURES / NAME).read_bytes()).hexdigest()
    assert cached.read_bytes() == (FIXTURES / NAME).read_bytes()
    assert (cached.parent / f"{NAME}.sha256").read_text().strip() == expected
    assert torch.load(out, weights_only=False)["exported"]["source"] == str(cached.resolve())
    # A second use reads the cache (no request: a wrong host would fail otherwise).
    assert fetch(url, expected, tmp_path / "cache", progress=False) == cached


def test_checksum_mismatch_is_an_error_and_keeps_nothing(server, tmp_path, capsys):
    url = f"{server}/{NAME}"
    code = main([url, "--out", str(tmp_path / "m.pt"), "--cache-dir", str(tmp_path / "cache"),
                 "--sha256", "0" * 64, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and url in err and "SHA-256" in err and "0" * 64 in err
    assert not list((tmp_path / "cache").rglob(NAME)) and not (tmp_path / "m.pt").exists()


def test_offline_fails_at_once_naming_the_url(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/{NAME}"
    code = main([url, "--out", str(tmp_path / "m.pt"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot download {url}" in err


def test_released_names_resolve_to_ocp_urls(tmp_path, monkeypatch):
    assert set(RELEASED) == {"spinconv_force_centric_2M", "spinconv_force_centric_all"}
    seen = []

    def no_network(url, sha256=None, cache=None, progress=True, timeout=30.0):
        seen.append(url)
        raise DownloadError(f"cannot download {url}: offline")

    monkeypatch.setattr("spinconv_train.ocp.released.fetch", no_network)
    assert main(["spinconv_force_centric_2M", "--out", str(tmp_path / "m.pt")]) == 2
    assert seen == ["https://dl.fbaipublicfiles.com/opencatalystproject/models/2021_12/s2ef/"
                    "spinconv_force_centric_2M.pt"]
