"""The weights download (the last resort of --weights imagenet), against HTTP on 127.0.0.1."""

from __future__ import annotations

import errno
import functools
import http.server
import os
import re
import threading
from pathlib import Path

import pytest

from featurizer import weights
from featurizer.errors import ConfigError

from servers import closed_port


@pytest.fixture
def no_local_weights(monkeypatch, tmp_path) -> Path:
    for name in ("FEATURIZER_WEIGHTS", "FEATURIZER_WEIGHTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras" / "models" / weights.NO_TOP_FILE


def test_the_download_lands_in_keras_cache_without_tensorflow(
    monkeypatch, no_local_weights, no_top_weights
):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(no_top_weights.parent)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{no_top_weights.name}"
        monkeypatch.setattr(weights, "KERAS_URL", url)
        resolved = weights.resolve("imagenet")
    finally:
        server.shutdown()
    assert resolved.path == no_local_weights
    assert no_local_weights.read_bytes() == no_top_weights.read_bytes()
    assert list(no_local_weights.parent.iterdir()) == [no_local_weights]  # no partial file left


def test_a_failed_download_is_one_configuration_error(monkeypatch, no_local_weights):
    refused = re.escape(os.strerror(errno.ECONNREFUSED))  # the meaning, not libc's wording
    with closed_port() as port:
        monkeypatch.setattr(weights, "KERAS_URL", f"http://127.0.0.1:{port}/weights.h5")
        with pytest.raises(
            ConfigError,
            match=rf"could not download MobileNetV2 weights \(URLError: "
            rf"<urlopen error \[Errno {errno.ECONNREFUSED}\] {refused}>\); pass --weights",
        ):
            weights.resolve("imagenet")
    assert not no_local_weights.parent.exists() or not list(no_local_weights.parent.iterdir())
