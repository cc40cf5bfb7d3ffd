"""Production operations on the real cluster: several executors, an executor lost in the middle
of featurization (gracefully, so it decommissions, then forcibly), event logs read back by the
Spark History Server, Prometheus metrics during the run, and a submit that refuses to replace
a running application unless told to; then the throughput of an undisturbed run per executor
core, against the same job local[2] on the host.

The input is the Test split of ../shared/datasets/fruits360-subset (1,965 real images, 131
classes) in the S3 server; the run uses 2 executors x 1 core, micro-batches of 150 files. The
throughput run reads the Training split (5,240 images).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import (
    BUCKET,
    CHART,
    GROUP,
    NAMESPACE,
    PLURAL,
    ROOT,
    VALUES,
    VERSION,
    follow,
    read_output,
    run,
    state,
    wait_for,
)
from servers import s3_keys

FEATURIZER = ROOT / ".venv" / "bin" / "featurizer"
RUN_TIMEOUT = 1500
OUTPUT = "output/fruits-test"
EVENTS = "spark-events"
SHARED = ROOT.parent / "shared" / "datasets" / "fruits360-subset"


def featurizer(*args: str | Path, timeout: float = RUN_TIMEOUT):
    return run(FEATURIZER, *args, timeout=timeout, check=False)


@pytest.fixture(scope="module", autouse=True)
def rbac(helm: str, kubectl: str, tmp_path_factory):
    """The chart's ServiceAccount and Role (what `helm install` or k8s/ bring) for the
    applications these tests submit; removed at the end."""
    rendered = run(
        helm,
        "template",
        "featurizer",
        CHART,
        "-n",
        NAMESPACE,
        *values_args(),
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ).stdout
    path = tmp_path_factory.mktemp("rbac") / "rbac.yaml"
    path.write_text(rendered)
    run(kubectl, "apply", "-f", path)
    yield
    run(kubectl, "delete", "-f", path, "--wait=false", check=False)


def upload_split(s3, split: str, minimum: int) -> tuple[str, int]:
    """One split of the Fruits-360 subset in the S3 server, as `fruits/<split>/<class>/...`."""
    files = sorted((SHARED / split).rglob("*.jpg"))
    assert len(files) >= minimum, f"{SHARED / split} holds {len(files)} images"
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda path: s3.upload_file(
                    str(path), BUCKET, f"fruits/{split}/{path.relative_to(SHARED / split)}"
                ),
                files,
            )
        )
    return f"s3a://{BUCKET}/fruits/{split}", len(files)


@pytest.fixture(scope="module")
def fruits(s3, sample) -> tuple[str, int]:
    """The Test split in S3 (`sample` made the bucket and the credentials Secret)."""
    uploaded = upload_split(s3, "Test", 1000)
    s3.put_object(Bucket=BUCKET, Key=f"{EVENTS}/", Body=b"")  # Spark needs the folder
    return uploaded


@pytest.fixture(scope="module")
def operations_values(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ops") / "operations.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "executor": {"instances": 2, "cores": 1},
                "dynamicAllocation": {"enabled": False},
                "decommission": {
                    "enabled": True,
                    "forceKillTimeout": "60s",
                    "gracePeriodSeconds": 75,
                },
                "eventLog": {"enabled": True, "dir": f"s3a://{BUCKET}/{EVENTS}"},
                "metrics": {"prometheus": True},
            }
        )
    )
    return path


def values_args(*extra: Path) -> list[str]:
    return [arg for path in [*VALUES, *extra] for arg in ("-f", str(path))]


def executor_pods(core, app: str) -> list:
    selector = f"spark-role=executor,sparkoperator.k8s.io/app-name={app}"
    return [
        pod
        for pod in core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        if pod.metadata.deletion_timestamp is None and pod.status.phase == "Running"
    ]


def staged_batches(s3) -> int:
    return len(
        [
            key
            for key in s3_keys(s3, BUCKET, f"{OUTPUT}/_work/featurized/")
            if key.endswith("/_SUCCESS")
        ]
    )


def http_text(url: str, must_hold: str = "") -> str | None:
    """The body at `url`, or None if it does not answer (or lacks `must_hold`)."""
    try:
        with urllib.request.urlopen(url, timeout=15) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return text if must_hold in text else None


class LogFollower(threading.Thread):
    """Streams a pod's log until the pod is gone (what a decommissioning executor says)."""

    def __init__(self, core, pod: str) -> None:
        super().__init__(daemon=True)
        self.core, self.pod, self.text = core, pod, ""

    def run(self) -> None:
        try:
            stream = self.core.read_namespaced_pod_log(
                self.pod, NAMESPACE, follow=True, _preload_content=False
            )
            for chunk in stream.stream(4096):
                self.text += chunk.decode("utf-8", "replace")
        except Exception as exc:
            self.text += f"\n(log stream ended: {exc})"


@pytest.fixture(scope="module")
def operated_run(fruits, operations_values, core, custom, s3, helm):
    """One featurization of 1,965 images with everything that happens to a production run:
    a second submit while it runs (refused), metrics scraped, one executor deleted gracefully
    (decommissions) and one forcibly. Returns what was observed."""
    source, images = fruits
    name = "featurizer-ops"
    seen: dict = {"images": images, "name": name}
    started = time.monotonic()
    proc = featurizer(
        "submit",
        "k8s",
        *values_args(operations_values),
        "--name",
        name,
        "--input",
        source,
        "--output",
        f"s3a://{BUCKET}/{OUTPUT}",
        "--files-per-batch",
        "150",
        "--no-wait",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    wait_for(lambda: len(executor_pods(core, name)) == 2, 600, "2 running executors")
    seen["executors_at_start"] = sorted(p.metadata.name for p in executor_pods(core, name))
    wait_for(lambda: staged_batches(s3) >= 1, 900, "the first staged micro-batch")

    # A second submit of the same output while it runs: refused, the run untouched.
    again = featurizer(
        "submit",
        "k8s",
        *values_args(operations_values),
        "--name",
        name,
        "--input",
        source,
        "--output",
        f"s3a://{BUCKET}/{OUTPUT}",
        "--no-wait",
        timeout=300,
    )
    seen["resubmit"] = (again.returncode, again.stderr.strip().splitlines()[-1:])

    # Metrics on the driver (host network: the node's 127.0.0.1) while it featurizes.
    seen["driver_metrics"] = wait_for(
        lambda: http_text("http://127.0.0.1:4040/metrics/prometheus", "_driver_"),
        120,
        "the driver's metrics endpoint",
    )
    seen["executor_metrics"] = wait_for(
        lambda: http_text(
            "http://127.0.0.1:4040/metrics/executors/prometheus", "metrics_executor_"
        ),
        120,
        "the executors' metrics endpoint",
    )

    # An executor deleted the way a spot interruption or a drain does: gracefully.
    victim = executor_pods(core, name)[0].metadata.name
    follower = LogFollower(core, victim)
    follower.start()
    time.sleep(2)
    core.delete_namespaced_pod(victim, NAMESPACE)
    wait_for(
        lambda: victim not in [p.metadata.name for p in core.list_namespaced_pod(NAMESPACE).items],
        180,
        f"{victim} to terminate",
    )
    follower.join(30)
    seen["decommissioned"], seen["decommission_log"] = victim, follower.text

    # Then one killed outright (no preStop, no grace): its tasks are simply rerun.
    wait_for(lambda: executor_pods(core, name), 300, "a running executor after the first loss")
    killed = executor_pods(core, name)[0].metadata.name
    core.delete_namespaced_pod(killed, NAMESPACE, grace_period_seconds=0)
    seen["killed"] = killed
    seen["batches_at_kill"] = staged_batches(s3)

    app, states = follow(custom, name, timeout=RUN_TIMEOUT)
    seen.update(app=app, states=states, seconds=time.monotonic() - started)
    yield seen
    featurizer("delete", name, timeout=120)


def test_the_run_completes_with_every_image_once(operated_run, s3) -> None:
    app, states = operated_run["app"], operated_run["states"]
    assert states[-1] == "COMPLETED", (states, app["status"].get("applicationState"))
    table, manifest = read_output(s3, OUTPUT)
    images = operated_run["images"]
    paths = table.column("path").to_pylist()
    assert table.num_rows == images and len(set(paths)) == images  # none lost, none twice
    counts = {key: manifest["counts"][key] for key in ("found", "selected", "featurized", "failed")}
    assert counts == {"found": images, "selected": images, "featurized": images, "failed": 0}
    assert len(set(table.column("label").to_pylist())) == 131
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{OUTPUT}/report.json")["Body"].read())
    accuracy = report["probe"]["results"]["features"]["test_accuracy"]
    assert accuracy > 0.7, report["probe"]
    executors = app["status"].get("executorState") or {}
    print(
        f"\noperations: {images} images, {len(executors)} executor pods over the run "
        f"(2 at a time), states {' -> '.join(states)}, attempts "
        f"{app['status'].get('executionAttempts')}, {operated_run['seconds']:.0f} s submit to "
        f"COMPLETED (job {manifest['timings_s']['total']:.0f} s, "
        f"{manifest['throughput']['featurize_images_per_s']} img/s featurize); probe "
        f"accuracy {accuracy:.3f}; decommissioned {operated_run['decommissioned']}, killed "
        f"{operated_run['killed']} (after {operated_run['batches_at_kill']} staged batches)"
    )
    assert len(executors) >= 4  # 2 + a replacement for each lost executor


def test_a_deleted_executor_decommissions(operated_run) -> None:
    log = operated_run["decommission_log"]
    assert "featurizer decommission:" in log and "to decommission (SIGPWR)" in log, log[-3000:]
    spark_lines = [
        line
        for line in log.splitlines()
        if "ecommission" in line and "featurizer decommission:" not in line
    ]
    assert spark_lines, log[-3000:]  # Spark's own account
    # The JVM exits once its blocks are migrated; PID 1 goes with it, so the hook's own last
    # line ("exited after") is never written in a real pod: Spark's is the evidence.
    assert "Executor self-exiting due to : Finished decommissioning" in log, log[-3000:]


def test_a_second_submit_does_not_replace_the_running_application(operated_run) -> None:
    code, last = operated_run["resubmit"]
    assert code == 2, last
    assert f"SparkApplication {operated_run['name']} is RUNNING" in last[0]
    assert "pass --replace" in last[0]


def test_metrics_answer_on_the_driver_during_the_run(operated_run) -> None:
    driver = operated_run["driver_metrics"]
    assert "metrics_" in driver and "_driver_" in driver, driver[:2000]
    executors = operated_run["executor_metrics"] or ""
    assert "metrics_executor_" in executors, executors[:2000]


def test_the_event_log_is_in_s3_and_the_history_server_reads_it(
    operated_run, s3, kubectl, helm, core
) -> None:
    _, manifest = read_output(s3, OUTPUT)
    app_id = manifest["spark"]["application_id"]
    logs = s3_keys(s3, BUCKET, f"{EVENTS}/")
    assert any(app_id in key for key in logs), logs[:20]
    history = run(
        helm,
        "template",
        "featurizer",
        CHART,
        "-n",
        NAMESPACE,
        *values_args(),
        "--set",
        "historyServer.enabled=true",
        "--set",
        "eventLog.enabled=true",
        "--set",
        f"eventLog.dir=s3a://{BUCKET}/{EVENTS}",
        "--set",
        f"job.input=s3a://{BUCKET}/x",
        "--set",
        f"job.output=s3a://{BUCKET}/y",
        "--show-only",
        "templates/historyserver.yaml",
    ).stdout
    manifest_file = Path(os.environ.get("TMPDIR", "/tmp")) / "featurizer-history.yaml"
    manifest_file.write_text(history)
    run(kubectl, "apply", "-f", manifest_file)
    try:

        def listed() -> list | None:
            text = http_text("http://127.0.0.1:18080/api/v1/applications")
            apps = json.loads(text) if text else []
            return [a for a in apps if a["id"] == app_id] or None

        found = wait_for(listed, 300, f"the History Server to list {app_id}", interval=5)
        attempt = found[0]["attempts"][-1]
        assert attempt["completed"] is True, found
        jobs = json.loads(
            http_text(f"http://127.0.0.1:18080/api/v1/applications/{app_id}/jobs") or "[]"
        )
        assert jobs and all(job["status"] in ("SUCCEEDED", "FAILED") for job in jobs)
        print(
            f"\nhistory server: {app_id} with {len(jobs)} jobs, read from "
            f"s3a://{BUCKET}/{EVENTS} ({len(logs)} event log objects)"
        )
    finally:
        run(kubectl, "delete", "-f", manifest_file, "--wait=false", check=False)


def test_replace_stops_a_running_application_and_starts_over(
    fruits, sample, core, custom, s3
) -> None:
    """--replace deletes the RUNNING application (its driver stops on SIGTERM, releasing the
    output's lease) and submits anew; the new one resumes and COMPLETES."""
    name, output = "featurizer-replace", f"s3a://{BUCKET}/output/replace"
    common = [*values_args(), "--name", name, "--input", sample, "--output", output, "--pca-k", "4"]
    first = featurizer("submit", "k8s", *common, "--no-wait", timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    application = lambda: custom.get_namespaced_custom_object(  # noqa: E731
        GROUP, VERSION, NAMESPACE, PLURAL, name
    )
    wait_for(lambda: state(application()) == "RUNNING", 600, f"{name} RUNNING")
    uid = application()["metadata"]["uid"]
    refused = featurizer("submit", "k8s", *common, "--no-wait", timeout=300)
    assert refused.returncode == 2 and "pass --replace" in refused.stderr, refused.stderr
    replaced = featurizer("submit", "k8s", *common, "--replace", "--no-wait", timeout=600)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    app, states = follow(custom, name)
    assert app["metadata"]["uid"] != uid and states[-1] == "COMPLETED", states
    table, _ = read_output(s3, "output/replace")
    assert table.num_rows == 100 and len(set(table.column("path").to_pylist())) == 100
    featurizer("delete", name, timeout=120)


def packed_split(s3, split: str, folder: Path) -> tuple[str, Path]:
    """`featurizer pack` of one split into `folder`, uploaded as `fruits-packed/<split>/`."""
    proc = featurizer("pack", SHARED / split, folder, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"fruits-packed/{split}/{path.relative_to(folder)}")
    return f"s3a://{BUCKET}/fruits-packed/{split}", folder


@pytest.mark.parametrize("layout", ["loose", "packed"])
def test_throughput_per_executor_core_against_the_same_job_on_the_host(
    layout: str, s3, sample, custom, tmp_path: Path
) -> None:
    """The 5,240 Training images, undisturbed, on 2 executor pods x 1 core, then the same job
    local[2] on the host from the local copy: featurize img/s per core of each, printed for
    BENCHMARKS.md (the cluster path is what users pay for), as loose objects and as packed
    shards. Asserts only that both complete with every image once."""
    source, images = upload_split(s3, "Training", 5000)
    local_input = SHARED / "Training"
    if layout == "packed":
        source, local_input = packed_split(s3, "Training", tmp_path / "packed")
    name, output = f"featurizer-throughput-{layout}", f"output/throughput-{layout}"
    options = ["--pca-k", "50", "--no-report"]
    two_executors = tmp_path / "executors.yaml"
    two_executors.write_text(
        yaml.safe_dump(
            {"executor": {"instances": 2, "cores": 1}, "dynamicAllocation": {"enabled": False}}
        )
    )
    started = time.monotonic()
    proc = featurizer(
        "submit",
        "k8s",
        *values_args(two_executors),
        "--name",
        name,
        "--input",
        source,
        "--output",
        f"s3a://{BUCKET}/{output}",
        *options,
        "--wait-timeout",
        str(RUN_TIMEOUT),
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}"
    table, cluster = read_output(s3, output)
    assert table.num_rows == images and len(set(table.column("path").to_pylist())) == images
    featurizer("delete", name, timeout=120)

    local_output = tmp_path / "local"
    local = featurizer("run", "--input", local_input, "--output", local_output, *options)
    assert local.returncode == 0, local.stderr[-3000:]
    host = json.loads((local_output / "manifest.json").read_text())
    assert host["counts"]["featurized"] == images

    cores = 2  # executor.instances x executor.cores above; local[2]
    per_core = {
        where: manifest["throughput"]["featurize_images_per_s"] / cores
        for where, manifest in (("cluster", cluster), ("host", host))
    }
    print(
        f"\nthroughput: {images} images ({layout}), 2 executor pods x 1 core: featurize "
        f"{cluster['throughput']['featurize_images_per_s']} img/s = {per_core['cluster']:.1f} "
        f"img/s per executor core (job end to end "
        f"{cluster['throughput']['end_to_end_images_per_s']} img/s, {seconds:.0f} s submit to "
        f"COMPLETED, stages {cluster['timings_s']}); the same job local[2] on the host: "
        f"{host['throughput']['featurize_images_per_s']} img/s = {per_core['host']:.1f} per "
        f"core (end to end {host['throughput']['end_to_end_images_per_s']} img/s); cluster / "
        f"host per core {per_core['cluster'] / per_core['host']:.2f}"
    )
