"""Inside the image: versions, user, layout; `featurizer run` in a container, checked from
the host."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from conftest import JOB, docker
from hostfiles import share

ROOT = Path(__file__).resolve().parents[2]
VERSIONS_SCRIPT = """
import json, sys, numpy, pandas, pyarrow, PIL, tensorflow, keras, pyspark, featurizer
print(json.dumps({"python": sys.version.split()[0], "numpy": numpy.__version__,
                  "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
                  "pillow": PIL.__version__, "tensorflow": tensorflow.__version__,
                  "keras": keras.__version__, "pyspark": pyspark.__version__,
                  "featurizer": featurizer.__version__}))
"""


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def run_in(image: str, script: str, timeout: float = 180) -> str:
    return docker(
        "run", "--rm", "--network", "host", image, "bash", "-c", script, timeout=timeout
    ).stdout


def test_versions_user_and_layout(image: str) -> None:
    out = run_in(
        image,
        f"""
        python -c '{VERSIONS_SCRIPT}' 2>/dev/null | tail -1
        echo "uid=$(id -u) pwd=$(pwd)"
        java -version 2>&1 | head -1
        spark-submit --version 2>&1 | grep -m1 -o 'version [0-9.]*'
        ls "$SPARK_HOME/jars" | grep -E '^(hadoop-aws|bundle|hadoop-client-api)-'
        ls /opt/featurizer/job/main.py "$FEATURIZER_WEIGHTS_DIR"
        echo "python=$PYSPARK_PYTHON"
    """,
    )
    print("\n" + out)
    versions = json.loads(out.splitlines()[0])
    pinned = pins()
    for package, pin in (
        ("numpy", "numpy"),
        ("pandas", "pandas"),
        ("pyarrow", "pyarrow"),
        ("pillow", "pillow"),
        ("tensorflow", "tensorflow_cpu"),
        ("keras", "keras"),
        ("pyspark", "pyspark"),
    ):
        assert versions[package] == pinned[pin], f"{package} in image != constraints.txt"
    assert versions["python"].startswith("3.11.")
    assert re.search(r"uid=(\d+)", out).group(1) == "185"
    assert "pwd=/opt/spark/work-dir" in out
    assert re.search(r'version "17\.', out), "Java 17 expected"
    assert f"version {pinned['pyspark']}" in out
    hadoop = re.search(r"hadoop-client-api-([\d.]+)\.jar", out).group(1)
    assert f"hadoop-aws-{hadoop}.jar" in out, "hadoop-aws must match PySpark's Hadoop"
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in out
    assert "python=/opt/featurizer/venv/bin/python" in out


def test_labels_name_the_versions_inside(image: str) -> None:
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", image).stdout)
    pinned = pins()
    assert labels["io.featurizer.spark.version"] == pinned["pyspark"]
    assert labels["io.featurizer.tensorflow.version"] == pinned["tensorflow_cpu"]
    assert labels["io.featurizer.job"] == JOB
    jars = run_in(image, 'ls "$SPARK_HOME/jars"')
    assert f"hadoop-aws-{labels['io.featurizer.hadoop.version']}.jar" in jars
    assert f"bundle-{labels['io.featurizer.aws-sdk.version']}-s3-" in jars  # slimmed SDK


def test_entrypoint_driver_mode_runs_spark_submit(image: str) -> None:
    """`driver` is what Spark's Kubernetes backend passes: spark-submit in client mode."""
    result = docker(
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        "SPARK_DRIVER_BIND_ADDRESS=127.0.0.1",
        image,
        "driver",
        "--master",
        "local[1]",
        JOB,
        "--help",
        timeout=180,
    )
    assert "--input INPUT" in result.stdout and "--pca-variance" in result.stdout


def test_featurizer_run_in_a_container(image: str, sample_dir: Path, tmp_path: Path) -> None:
    output = share(tmp_path / "out", writable=True)
    share(sample_dir)  # the image runs as uid 185
    result = docker(
        "run",
        "--rm",
        "--network",
        "host",
        "--cpus",
        "2",
        "--memory",
        "6g",
        "-v",
        f"{sample_dir}:/data:ro",
        "-v",
        f"{output}:/out",
        image,
        "featurizer",
        "run",
        "--input",
        "/data",
        "--output",
        "/out/run",
        "--master",
        "local[2]",
        "--pca-k",
        "8",
        timeout=600,
    )
    run = output / "run"
    assert (run / "_SUCCESS").exists(), result.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    counts = {key: manifest["counts"][key] for key in ("found", "selected", "featurized", "failed")}
    assert counts == {"found": 100, "selected": 100, "featurized": 100, "failed": 0}
    features = pq.read_table(run / "features")
    assert features.num_rows == 100
    assert len(set(features.column("path").to_pylist())) == 100
    assert {len(v) for v in features.column("features").to_pylist()} == {1280}
    assert {len(v) for v in features.column("pca").to_pylist()} == {8}
    assert manifest["weights"]["name"].endswith("_no_top.h5")
    print(f"\ncontainer run: {manifest['throughput']}")


def test_spark_ml_uses_native_blas_and_lapack(image: str) -> None:
    """PCA's eigen-decomposition goes through netlib: native OpenBLAS/LAPACK, not the ~6x
    slower JVM fallback."""
    script = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
netlib = spark.sparkContext._jvm.dev.ludovic.netlib
print("impl", netlib.blas.BLAS.getInstance().getClass().getSimpleName(),
      netlib.lapack.LAPACK.getInstance().getClass().getSimpleName())
spark.stop()
"""
    out = docker(
        "run", "--rm", "--network", "host", image, "python", "-c", script, timeout=180
    ).stdout
    assert re.search(r"^impl JNIBLAS JNILAPACK$", out, re.M), out


def test_the_spark_user_can_read_everything_it_needs(image: str) -> None:
    """Every file user 185 uses is readable by it, every folder enterable, whatever modes
    the build context had (a cache filled under umask 077 once gave 0600 S3A jars)."""
    out = run_in(
        image,
        r"""
        echo "uid=$(id -u)"
        for path in "$VENV" "$SPARK_HOME/jars" "$FEATURIZER_WEIGHTS_DIR" /opt/featurizer/job \
                    "$FEATURIZER_CACHE/engines"; do
            echo "tree $path $(find "$path" | wc -l)"
        done
        find /opt/featurizer /opt/entrypoint.sh \( ! -readable -o -type d ! -executable \) \
             -printf 'unreadable %M %u %p\n' 2>&1
        for tool in /opt/entrypoint.sh "$VENV/bin/python" "$VENV/bin/featurizer" \
                    "$SPARK_HOME/bin/spark-submit" "$SPARK_HOME/bin/spark-class"; do
            [ -x "$tool" ] || echo "unrunnable $tool"
        done
    """,
    )
    assert "uid=185" in out
    trees = dict(re.findall(r"^tree (\S+) (\d+)$", out, re.M))
    assert len(trees) == 5 and all(int(count) > 1 for count in trees.values()), out
    problems = [line for line in out.splitlines() if line.startswith(("unreadable", "unrunnable"))]
    assert not problems, "\n".join(problems[:50])


def test_s3a_connector_loads_as_the_spark_user(image: str) -> None:
    """The S3A file system and the SDK clients it needs load from $SPARK_HOME/jars as uid 185,
    and an S3AFileSystem initializes (no request is sent: no server is needed). Fails on
    an image whose jars its user cannot read (ClassNotFoundException)."""
    script = """
import os
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.hadoop.fs.s3a.endpoint.region", "us-east-1").getOrCreate())
jvm = spark.sparkContext._jvm
conf = spark.sparkContext._jsc.hadoopConfiguration()
print("uid", os.getuid())
print("class", jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass("s3a", conf).getName())
for name in ("software.amazon.awssdk.services.s3.S3AsyncClient",
             "software.amazon.awssdk.services.sts.StsClient",
             "software.amazon.awssdk.services.sso.SsoClient"):
    print("class", jvm.java.lang.Class.forName(name).getName())
fs = jvm.org.apache.hadoop.fs.FileSystem.newInstance(jvm.java.net.URI("s3a://any-bucket/"), conf)
print("fs", fs.getClass().getName(), fs.getUri().toString())
fs.close()
spark.stop()
"""
    # No S3 server and no credentials: initialize() sends no request (no bucket probe),
    # and the instance metadata service is off so nothing is looked up either.
    result = docker(
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        "AWS_EC2_METADATA_DISABLED=true",
        image,
        "python",
        "-c",
        script,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    out = result.stdout
    assert re.search(r"^uid 185$", out, re.M), out
    for name in (
        "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "software.amazon.awssdk.services.s3.S3AsyncClient",
        "software.amazon.awssdk.services.sts.StsClient",
        "software.amazon.awssdk.services.sso.SsoClient",
    ):
        assert re.search(rf"^class {re.escape(name)}$", out, re.M), out
    assert re.search(
        r"^fs org\.apache\.hadoop\.fs\.s3a\.S3AFileSystem s3a://any-bucket$", out, re.M
    ), out


def test_decommission_script_signals_the_executor_and_waits_for_it(image: str) -> None:
    """/opt/decom.sh (the executors' preStop hook): SIGPWR to the executor JVM, then waits
    for it to exit, logging to the container's log. A stand-in executor process carries the
    JVM's main class in its command line (split here so this script itself does not match)."""
    out = run_in(
        image,
        r"""
        class=org.apache.spark.executor.CoarseGrained
        bash -c 'trap "echo executor: got SIGPWR, exiting; exit 0" PWR
                 while :; do sleep 0.1; done' "${class}ExecutorBackend" &
        sleep 1
        test -x /opt/decom.sh && /opt/decom.sh
        echo "decom exit=$? executor alive=$(kill -0 $! 2>/dev/null && echo yes || echo no)"
    """,
    )
    assert re.search(
        r"featurizer decommission: \S+ asking executor JVM \d+ to decommission "
        r"\(SIGPWR\)",
        out,
    ), out
    assert "executor: got SIGPWR, exiting" in out
    assert re.search(r"featurizer decommission: \S+ executor JVM \d+ exited after \d+ s", out), out
    assert "decom exit=0 executor alive=no" in out
