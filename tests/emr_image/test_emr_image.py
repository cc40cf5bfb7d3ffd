"""docker/emr-on-eks.Dockerfile built FROM the stand-in EMR base (`make emr-test`).

Not part of plain `make test` (pyproject's norecursedirs): it needs the images that
`make emr-test` builds. The job runs inside the image with spark-submit, in local mode on
127.0.0.1 (host network, no bridge), with the Python settings of the EMR request; its
output is checked from the host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurizer import sample_data
from featurizer.config import RunConfig
from featurizer.launch import emr_spec

from hostfiles import share

DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
IMAGE = os.environ.get("EMR_IMAGE", "featurizer-emr:standin")
BASE = os.environ.get("EMR_BASE_IMAGE", "featurizer-emr-standin:spark-3.5.6")
SPARK_VERSION = os.environ.get("EMR_SPARK_VERSION", "3.5.6")
EMR_MOUNTS = (
    "/var/log/fluentd",
    "/var/log/spark/user",
    "/var/log/spark/apps",
    "/mnt",
    "/tmp",
    "/home/hadoop",
)


def run_in(
    image: str, *command: str, timeout: float = 120, volumes: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    mounts = [arg for volume in volumes for arg in ("-v", volume)]
    return subprocess.run(
        [DOCKER, "run", "--rm", "--network", "host", *mounts, image, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module", autouse=True)
def images_exist():
    for image in (IMAGE, BASE):
        if subprocess.run([DOCKER, "image", "inspect", image], capture_output=True).returncode:
            pytest.fail(f"image {image} not found: run `make emr-test`")


def test_nothing_is_written_where_emr_mounts_volumes():
    listing = ["sh", "-c", "find " + " ".join(EMR_MOUNTS) + " 2>/dev/null | sort"]
    assert run_in(IMAGE, *listing).stdout == run_in(BASE, *listing).stdout


def test_image_runs_as_hadoop_with_the_jobs_python_and_emrs_spark():
    check = (
        "import sys, numpy, tensorflow, featurizer; "
        "print(sys.version.split()[0], numpy.__version__, tensorflow.__version__)"
    )
    result = run_in(
        IMAGE,
        "sh",
        "-c",
        f'id -un; {emr_spec.PYTHON} -c "{check}"; '
        f'{emr_spec.PYTHON} -c "import pyspark" 2>/dev/null || echo no-pyspark',
    )
    user, versions, pyspark = result.stdout.split("\n")[:3]
    assert user == "hadoop"
    python, numpy, tensorflow = versions.split()
    assert python.startswith("3.11.")
    assert (numpy, tensorflow) == (_pin("numpy"), _pin("tensorflow_cpu"))
    assert pyspark == "no-pyspark"  # the venv uses the base image's Spark only


def test_the_hadoop_user_can_read_everything_it_needs():
    """What the job's user reads in /opt/featurizer (venv, weights, entry point) is readable
    and every folder enterable, whatever modes the build context had on the host."""
    script = r"""
        id -un
        echo "files $(find /opt/featurizer -type f | wc -l)"
        ls /opt/featurizer/main.py /opt/featurizer/models/*.h5 /opt/featurizer/venv/bin/python
        find /opt/featurizer \( ! -readable -o -type d ! -executable \) \
            -printf 'unreadable %M %u %p\n'
    """
    result = run_in(IMAGE, "sh", "-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == "hadoop"
    assert int(re.search(r"^files (\d+)$", result.stdout, re.M).group(1)) > 1000
    problems = [line for line in result.stdout.splitlines() if line.startswith("unreadable")]
    assert not problems, "\n".join(problems[:50])


def test_job_runs_with_spark_submit_on_spark_3_5(tmp_path):
    sample_data.generate(tmp_path / "sample")  # 100 images, 5 classes
    share(tmp_path / "sample")  # the container runs as hadoop
    out = share(tmp_path / "out", writable=True)
    config = RunConfig(input="/data", output="/out/result", pca_k=8)
    python_conf = {
        key: value
        for key, value in emr_spec.spark_defaults("", "", "").items()
        if key.startswith("spark.pyspark")
    }  # as in the EMR request
    conf = {
        **python_conf,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
    }
    command = [
        "spark-submit",
        "--master",
        "local[2]",
        *[arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")],
        emr_spec.ENTRY_POINT,
        *config.to_argv(),
    ]
    result = run_in(
        IMAGE, *command, timeout=900, volumes=(f"{tmp_path / 'sample'}:/data:ro", f"{out}:/out")
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    result_dir = out / "result"
    assert (result_dir / "_SUCCESS").exists()
    manifest = json.loads((result_dir / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert manifest["counts"]["featurized"] == 100 and manifest["counts"]["failed"] == 0
    assert manifest["versions"]["spark"].startswith(SPARK_VERSION)
    assert manifest["versions"]["python"].startswith("3.11.")
    features = pq.read_table(result_dir / "features").to_pandas()
    assert len(features) == 100
    assert features["label"].nunique() == len(sample_data.CLASSES)
    assert {len(vector) for vector in features["features"]} == {1280}
    assert {len(vector) for vector in features["pca"]} == {8}


def _pin(name: str) -> str:
    root = Path(__file__).resolve().parents[2]
    for line in (root / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(name.lower() + "=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{name} is not pinned in constraints.txt")
