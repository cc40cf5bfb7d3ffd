"""Pinned dependencies. hack/fetch-jars.sh takes only the S3A jars pinned by sha256 in
docker/jars.sha256, whatever the server sends: run for real against a Maven stand-in on
127.0.0.1 that serves a jar with a matching .sha1 but another sha256, and against a version
that is not pinned. The images' pip installs cannot reach an index: only the wheelhouse built
from constraints.txt (hack/wheelhouse.sh) and the app's own wheel go in."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "fetch-jars.sh"


@pytest.fixture
def maven(tmp_path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving the folder it returns, Maven Central's layout."""
    root = tmp_path / "maven"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()


def publish(root: Path, version: str, content: bytes) -> None:
    folder = root / "org" / "apache" / "hadoop" / "hadoop-aws" / version
    folder.mkdir(parents=True)
    (folder / f"hadoop-aws-{version}.jar").write_bytes(content)
    (folder / f"hadoop-aws-{version}.jar.sha1").write_text(hashlib.sha1(content).hexdigest())


def fetch(url: str, cache: Path, version: str) -> subprocess.CompletedProcess:
    # The dependency list the script would read from the POMs: hadoop-aws alone.
    cache.mkdir(exist_ok=True)
    (cache / f"hadoop-aws-{version}.deps").write_text(f"org.apache.hadoop:hadoop-aws:{version}\n")
    env = {
        **os.environ,
        "FEATURIZER_MAVEN_URL": url,
        "FEATURIZER_JARS_CACHE": str(cache),
        "FEATURIZER_HADOOP_VERSION": version,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env
    )


def test_a_jar_whose_sha256_is_not_the_pinned_one_is_refused_and_removed(maven, tmp_path):
    url, root = maven
    pinned = {
        line.split()[1]: line.split()[0]
        for line in (ROOT / "docker" / "jars.sha256").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert "hadoop-aws-3.5.0.jar" in pinned
    publish(root, "3.5.0", b"PK\x03\x04 not the pinned hadoop-aws")
    cache = tmp_path / "cache"
    result = fetch(url, cache, "3.5.0")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "fetch-jars: error: hadoop-aws-3.5.0.jar: sha256 differs from docker/jars.sha256"
    )
    assert result.stdout == ""  # no jar list for spark.jars
    assert not (cache / "hadoop-aws-3.5.0.jar").exists()


def test_a_cached_jar_that_changed_is_not_used(maven, tmp_path):
    url, root = maven
    publish(root, "3.5.0", b"PK\x03\x04 not the pinned hadoop-aws either")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "hadoop-aws-3.5.0.jar").write_bytes(b"PK\x03\x04 tampered in the cache")
    result = fetch(url, cache, "3.5.0")
    assert result.returncode == 1, result.stderr
    assert "downloading " + url in result.stderr  # the cached copy was not taken as it is
    assert result.stderr.strip().splitlines()[-1].endswith("sha256 differs from docker/jars.sha256")
    assert not (cache / "hadoop-aws-3.5.0.jar").exists()


def test_a_version_with_no_pinned_sha256_is_refused_before_any_download(maven, tmp_path):
    url, root = maven
    publish(root, "9.9.9", b"PK\x03\x04 an unpinned hadoop-aws")
    result = fetch(url, tmp_path / "cache", "9.9.9")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "fetch-jars: error: hadoop-aws-9.9.9.jar has no sha256 in docker/jars.sha256; verify "
        "it and add its `sha256sum` line"
    )
    assert "downloading" not in result.stderr
    assert not (tmp_path / "cache" / "hadoop-aws-9.9.9.jar").exists()


# Our images (the EMR stand-in is the base EMR provides, not ours).
IMAGES = ("Dockerfile", "emr-on-eks.Dockerfile")


def pip_installs(dockerfile: Path) -> list[str]:
    """Every `pip install` command of a Dockerfile, its continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [
        command.strip()
        for line in text.splitlines()
        if line.startswith("RUN ")
        for command in line[4:].split("&&")
        if re.search(r"\bpip install\b", command)
    ]


@pytest.mark.parametrize("name", IMAGES)
def test_the_images_pip_installs_are_offline_and_constrained(name):
    installs = pip_installs(ROOT / "docker" / name)
    assert installs, f"no pip install found in docker/{name}"
    for command in installs:
        assert "--no-index" in command.split(), command
        # Third-party wheels go in under constraints.txt; the app's own wheel with --no-deps.
        assert "-c" in command.split() or "--no-deps" in command.split(), command
    assert any("-c" in command.split() and "constraints.txt" in command for command in installs), (
        installs
    )
