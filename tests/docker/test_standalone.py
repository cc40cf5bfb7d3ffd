"""A real distributed run, then the same run losing a worker.

Spark standalone from the image: 1 master + 2 workers (1 core each) as separate containers,
the driver in a fourth (client mode, `spark-submit local:///.../main.py`), all on the host
network at 127.0.0.1 with distinct ports. 300 images are read from, and Parquet written to,
moto's S3 server through s3a://. Results are checked from the host by reading the Parquet
back out of the S3 server.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pytest

from conftest import JOB, S3_CREDENTIALS, Containers, docker, port_open
from processes import wait_for
from servers import free_port, read_s3_output, s3_keys

BUCKET = "featurizer"
IMAGES = 300  # featurizer sample-data --scale 3
FILES_PER_BATCH = 100  # 3 micro-batches: the fault lands between the first and last
RUN_TIMEOUT = 900


@dataclass
class Cluster:
    master_url: str
    master_ui: int
    workers: list[str]
    env: dict[str, str]


@pytest.fixture(scope="module")
def images_in_s3(s3, tmp_path_factory) -> str:
    from featurizer import sample_data

    folder = tmp_path_factory.mktemp("images")
    assert sample_data.generate(folder, scale=3) == IMAGES
    s3.create_bucket(Bucket=BUCKET)
    files = sorted(p for p in folder.rglob("*.jpg"))
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda p: s3.upload_file(str(p), BUCKET, f"images/{p.relative_to(folder)}"), files
            )
        )
    return f"s3a://{BUCKET}/images"


def alive_workers(master_ui: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{master_ui}/json/", timeout=5) as answer:
            return int(json.load(answer).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def cluster(containers: Containers, s3_server: str) -> Cluster:
    env = {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": s3_server, "SPARK_LOCAL_IP": "127.0.0.1"}
    port, ui = free_port(), free_port()
    containers.start(
        "master",
        "spark-class",
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--webui-port",
        str(ui),
        env=env,
        memory="1g",
    )
    wait_for(lambda: port_open(port), 120, "the Spark master")
    workers = [
        containers.start(
            f"worker{i}",
            "spark-class",
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--webui-port",
            str(free_port()),
            "--cores",
            "1",
            "--memory",
            "3g",
            "--work-dir",
            "/opt/spark/work-dir/worker",
            f"spark://127.0.0.1:{port}",
            env=env,
            cpus="1",
            memory="4g",
        )
        for i in (1, 2)
    ]
    wait_for(lambda: alive_workers(ui) == 2, 120, "2 workers registered with the master")
    return Cluster(f"spark://127.0.0.1:{port}", ui, workers, env)


def submit(
    containers: Containers, cluster: Cluster, role: str, input_uri: str, output_uri: str
) -> str:
    """The driver container: spark-submit in client mode against the standalone master."""
    return containers.start(
        role,
        "spark-submit",
        "--master",
        cluster.master_url,
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.driver.memory=2g",
        "--conf",
        "spark.executor.memory=1g",
        "--conf",
        "spark.executor.cores=1",
        "--conf",
        "spark.cores.max=2",
        # Executors share the host name 127.0.0.1 but not a disk (separate containers): shuffle
        # blocks must be fetched over the network, not read from "host-local" files.
        "--conf",
        "spark.shuffle.readHostLocalDisk=false",
        "--conf",
        "spark.sql.shuffle.partitions=8",  # 300 rows: not 200 tiny tasks
        JOB,
        "--input",
        input_uri,
        "--output",
        output_uri,
        "--files-per-batch",
        str(FILES_PER_BATCH),
        "--pca-k",
        "16",
        env=cluster.env,
        cpus="1",
        memory="4g",
    )


def finish(containers: Containers, driver: str) -> str:
    code = containers.exit_code(driver, timeout=RUN_TIMEOUT)
    log = containers.logs(driver)
    if code != 0:
        first_error = next((line for line in log.splitlines() if "Exception" in line), "")
        raise AssertionError(f"driver exited {code}; first exception: {first_error}\n{log[-4000:]}")
    return log


def read_output(s3, prefix: str) -> tuple[pa.Table, dict]:
    return read_s3_output(s3, BUCKET, prefix)


def check_complete(table: pa.Table, manifest: dict) -> None:
    paths = table.column("path").to_pylist()
    assert table.num_rows == IMAGES
    assert len(set(paths)) == IMAGES, "duplicate paths in features/"
    assert all(path.startswith(f"s3a://{BUCKET}/images/") for path in paths)
    assert {len(v) for v in table.column("features").to_pylist()} == {1280}
    counts = {key: manifest["counts"][key] for key in ("found", "selected", "featurized", "failed")}
    assert counts == {"found": IMAGES, "selected": IMAGES, "featurized": IMAGES, "failed": 0}


def test_standalone_cluster_s3a(
    containers: Containers, cluster: Cluster, s3, images_in_s3: str
) -> None:
    start = time.monotonic()
    driver = submit(containers, cluster, "driver", images_in_s3, f"s3a://{BUCKET}/out/clean")
    finish(containers, driver)
    wall = time.monotonic() - start
    table, manifest = read_output(s3, "out/clean")
    check_complete(table, manifest)
    assert manifest["spark"]["master"] == cluster.master_url
    assert manifest["spark"]["default_parallelism"] == 2
    print(
        f"\nstandalone (2 workers x 1 core, s3a on moto): {IMAGES} images, featurize "
        f"{manifest['throughput']['featurize_images_per_s']} images/s, end to end "
        f"{manifest['throughput']['end_to_end_images_per_s']} images/s "
        f"(job {manifest['timings_s']['total']:.0f}s, submit to exit {wall:.0f}s)\n"
        f"stages (s): {manifest['timings_s']}"
    )


def test_worker_lost_during_featurization(
    containers: Containers, cluster: Cluster, s3, images_in_s3: str
) -> None:
    assert alive_workers(cluster.master_ui) == 2
    driver = submit(containers, cluster, "driver-fault", images_in_s3, f"s3a://{BUCKET}/out/fault")
    staged = "out/fault/_work/featurized/"

    def batch_done(n: int) -> bool:
        return bool(s3_keys(s3, BUCKET, f"{staged}batch={n:06d}/_SUCCESS"))

    # The fault lands mid-featurization: the first micro-batch is committed, the last is not.
    wait_for(
        lambda: batch_done(0) or not containers.running(driver),
        RUN_TIMEOUT,
        "the first featurized micro-batch",
    )
    assert containers.running(driver), containers.logs(driver)[-4000:]
    victim = cluster.workers[1]
    docker("kill", victim)
    in_flight = not batch_done(IMAGES // FILES_PER_BATCH - 1)
    assert in_flight, "featurization finished before the worker was killed"
    log = finish(containers, driver)

    assert re.search(r"Lost executor \d+", log), "the driver never noticed the lost executor"
    table, manifest = read_output(s3, "out/fault")
    check_complete(table, manifest)
    print(
        f"\nfault: killed {victim.rsplit('-', 1)[-1]} after micro-batch 0 of "
        f"{IMAGES // FILES_PER_BATCH}; the job completed with {table.num_rows} rows, "
        f"{len(set(table.column('path').to_pylist()))} distinct paths "
        f"({manifest['throughput']['featurize_images_per_s']} images/s)"
    )
