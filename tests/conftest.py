"""Shared fixtures: the real weights, a real local Spark session, real sample runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from servers import MotoServer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
_CACHE_ROOT: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Every test session starts with empty featurizer caches (converted engines, the JVM
    class archive), as on a fresh machine: a warm cache must not hide a broken first run.
    Tests of the caches make their own. The S3A jars and the Go-built tools stay shared: each
    jar is checked against its pinned sha256 at every use (hack/fetch-jars.sh; .ci/run
    downloads them afresh), each tool is run before it is used (hack/tools.sh)."""
    global _CACHE_ROOT
    _CACHE_ROOT = Path(tempfile.mkdtemp(prefix="featurizer-test-cache-"))
    user_cache = Path(os.environ.get("FEATURIZER_CACHE", "~/.cache/featurizer")).expanduser()
    os.environ.setdefault("FEATURIZER_JARS_CACHE", str(user_cache / "jars"))
    os.environ.setdefault("FEATURIZER_TOOLS_CACHE", str(user_cache))  # helm & co. (Go builds)
    os.environ["FEATURIZER_CACHE"] = str(_CACHE_ROOT)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CACHE_ROOT is not None:
        shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


def _weights_dir() -> Path:
    folder = Path(os.environ.get("FEATURIZER_WEIGHTS_DIR", SHARED / "models"))
    if not (folder / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").is_file():
        pytest.fail(f"MobileNetV2 weights not found in {folder}: set FEATURIZER_WEIGHTS_DIR")
    return folder


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """The MobileNetV2 weights folder, also exported as FEATURIZER_WEIGHTS_DIR for the job
    (in-process and the `featurizer run` processes the tests start). Requested only by what
    runs the job, so the launcher, chart and report tests need no weights on the machine."""
    folder = _weights_dir()
    os.environ["FEATURIZER_WEIGHTS_DIR"] = str(folder)
    return folder


# The test packages whose tests run the job (in-process or as `featurizer run` processes on
# this machine). The others (k8s, emr, report, docker, emr_image, cluster) render, submit or
# run images that carry their own weights.
_JOB_PACKAGES = ("unit", "integration", "reliability")


@pytest.fixture(autouse=True)
def _job_weights(request: pytest.FixtureRequest) -> None:
    """Tests in a job package get the weights (and the variable) before they start."""
    package = Path(str(request.node.path)).relative_to(ROOT / "tests").parts[0]
    if package in _JOB_PACKAGES:
        request.getfixturevalue("weights_dir")


@pytest.fixture(scope="session")
def no_top_weights(weights_dir: Path) -> Path:
    return weights_dir / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@pytest.fixture(scope="session")
def fruits360() -> Path:
    folder = Path(os.environ.get("FEATURIZER_FRUITS360", SHARED / "datasets" / "fruits360-subset"))
    if not (folder / "Training").is_dir():
        pytest.fail(f"Fruits-360 subset not found at {folder}: set FEATURIZER_FRUITS360")
    return folder


@pytest.fixture(scope="session")
def fruits360_run(spark, fruits360: Path, tmp_path_factory) -> tuple[Path, dict]:
    """One real run over the whole Fruits-360 subset (7,205 images, 131 classes; a few
    minutes on 2 cores), shared by every test that needs real features: (output, manifest)."""
    from featurizer import pipeline
    from featurizer.config import RunConfig

    output = tmp_path_factory.mktemp("fruits360") / "run"
    manifest = pipeline.run(RunConfig(input=str(fruits360), output=str(output)), spark=spark)
    return output, manifest


@pytest.fixture(scope="session")
def spark(weights_dir: Path):
    """One real local Spark session for the integration tests (2 cores, like the machine)."""
    from featurizer import session
    from featurizer.config import RunConfig

    spark = session.create(RunConfig(input="unused", output="unused", master="local[2]"))
    yield spark
    spark.stop()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The synthetic sample (100 images, class names with spaces)."""
    from featurizer import sample_data

    folder = tmp_path_factory.mktemp("sample")
    sample_data.generate(folder)
    return folder


@pytest.fixture(scope="session")
def helm() -> Iterator[str]:
    """helm v3 from hack/tools.sh (built once from the Go module proxy, then cached), also
    FEATURIZER_HELM for the featurizer processes the tests start (restored afterwards)."""
    path = (
        os.environ.get("FEATURIZER_HELM")
        or subprocess.run(
            ["bash", str(ROOT / "hack" / "tools.sh"), "helm"],
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        ).stdout.strip()
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FEATURIZER_HELM", path)
        yield path


@pytest.fixture(scope="session")
def moto_servers(tmp_path_factory) -> Iterator[Callable[..., MotoServer]]:
    """Start a moto server on 127.0.0.1 (the arguments of MotoServer: env, port); every
    server started is stopped at the end of the session. The one way tests get an AWS
    endpoint; `moto` is the plain shared one."""
    started: list[MotoServer] = []

    def start(**options) -> MotoServer:
        server = MotoServer(tmp_path_factory.mktemp("moto"), **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def moto(moto_servers) -> MotoServer:
    """The session's plain moto server (S3, IAM, emr-containers; no authentication). Tests
    that need it empty call its reset()."""
    return moto_servers()
