"""`featurizer submit k8s`, `status`, `logs`, `delete` without a cluster: rendering through the
real chart, argument and kubeconfig errors, an unreachable API server on a closed 127.0.0.1
port, and how API errors read. (Against a real API server: the local cluster harness.)"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes.client.rest import ApiException

from featurizer.config import RunConfig
from featurizer.errors import ConfigError, FeaturizerError
from featurizer.launch import k8s
from featurizer.launch.k8s.cluster import REQUEST_TIMEOUT

import servers
from apiserver import END, ApiServer, status_body
from processes import with_default_sigint

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "featurizer"
KIND_VALUES = CHART / "values-kind.yaml"
FEATURIZER = Path(sys.executable).with_name("featurizer")


def featurizer(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(FEATURIZER), *args], capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featurizer: error: "), proc.stderr
    return lines[0]


@pytest.fixture
def closed_port() -> Iterator[int]:
    with servers.closed_port() as port:
        yield port


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {"server": server, "insecure-skip-tls-verify": True},
                    }
                ],
                "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )
    )
    return path


# ---- rendering ---------------------------------------------------------------------------------


def test_submitter_renders_what_kubectl_apply_of_k8s_applies(helm):
    """Same values -> the same object as k8s/kind.yaml, i.e. plain `helm template`."""
    job = yaml.safe_load(KIND_VALUES.read_text())["job"]
    config = RunConfig(input=job["input"], output=job["output"], resume=True)
    app = k8s.render(config, name="featurizer", values_files=[KIND_VALUES], helm=helm)
    checked_in = [
        doc
        for doc in yaml.safe_load_all((ROOT / "k8s" / "kind.yaml").read_text())
        if doc and doc["kind"] == "SparkApplication"
    ]
    assert app == checked_in[0]


@pytest.mark.parametrize(
    "config",
    [
        RunConfig(input="s3a://b/in", output="s3a://b/out"),
        RunConfig(
            input="s3a://b/Fruits 360",
            output="s3a://b/o",
            pca_k=12,
            limit=50,
            engine="keras",
            overwrite=True,
            conf=("spark.x=1", "spark.y=a b"),
        ),
        RunConfig(
            input="s3a://b/in",
            output="s3a://b/out",
            resume=True,
            sample_fraction=0.1,
            max_error_rate=0.0,
            files_per_batch=20_000_000,
        ),
    ],
    ids=["defaults", "many", "resume"],
)
def test_rendered_arguments_are_the_config(helm, config: RunConfig):
    app = k8s.render(config, name="run-1", namespace="jobs", values_files=[KIND_VALUES], helm=helm)
    assert app["metadata"] == {**app["metadata"], "name": "run-1", "namespace": "jobs"}
    assert RunConfig.from_argv(app["spec"]["arguments"]) == config


def test_options_decide_over_a_values_files_job_section(helm, tmp_path: Path):
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "job": {
                    "input": "s3a://x/y",
                    "output": "s3a://x/z",
                    "pcaK": 9,
                    "limit": 5,
                    "resume": True,
                }
            }
        )
    )
    config = RunConfig(input="s3a://b/in", output="s3a://b/out")
    arguments = k8s.render(config, name="run-2", values_files=[values], helm=helm)["spec"][
        "arguments"
    ]
    assert arguments == ["--input", "s3a://b/in", "--output", "s3a://b/out"]


def test_job_values_cover_every_field():
    config = RunConfig(input="i", output="o", pca_k=3)
    values = k8s.job_values(config)
    assert set(values) == {k8s.camel(f.name) for f in dataclasses.fields(RunConfig)}
    assert values["pcaK"] == 3 and values["input"] == "i" and values["limit"] is None
    assert values["conf"] == []


def test_a_chart_out_of_step_with_the_job_is_refused():
    config = RunConfig(input="s3a://b/in", output="s3a://b/out", pca_k=8)
    app = {"spec": {"arguments": ["--input", "s3a://b/in", "--output", "s3a://b/out"]}}
    with pytest.raises(ConfigError, match="do not match the options"):
        k8s.check_arguments(app, config)
    app["spec"]["arguments"] += ["--pca-k", "8", "--option-from-a-newer-chart", "1"]
    with pytest.raises(ConfigError, match="do not match the options"):
        k8s.check_arguments(app, config)


def test_dry_run_prints_the_application(helm):
    proc = featurizer(
        "submit",
        "k8s",
        "--dry-run",
        "-f",
        str(KIND_VALUES),
        "--name",
        "fruits",
        "--input",
        "s3a://featurizer/sample",
        "--output",
        "s3a://featurizer/o",
        "--pca-k",
        "8",
    )
    assert proc.returncode == 0, proc.stderr
    app = yaml.safe_load(proc.stdout)
    assert (app["kind"], app["metadata"]["name"]) == ("SparkApplication", "fruits")
    assert RunConfig.from_argv(app["spec"]["arguments"]) == RunConfig(
        input="s3a://featurizer/sample", output="s3a://featurizer/o", pca_k=8, resume=True
    )


def test_overwrite_replaces_the_default_resume(helm):
    proc = featurizer(
        "submit",
        "k8s",
        "--dry-run",
        "-f",
        str(KIND_VALUES),
        "--input",
        "s3a://featurizer/sample",
        "--output",
        "s3a://featurizer/o",
        "--overwrite",
    )
    arguments = yaml.safe_load(proc.stdout)["spec"]["arguments"]
    assert "--overwrite" in arguments and "--resume" not in arguments


# ---- argument errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "s3a://b/o"], "the following arguments are required: --input"),
        (["--input", "a", "--output", "b", "--pca-k", "x"], "invalid int value"),
    ],
)
def test_missing_input_and_a_non_integer_pca_k_are_usage_errors_exit_2(
    args: list[str], message: str
):
    proc = featurizer("submit", "k8s", "--dry-run", *args)
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pca-k", "0"], "--pca-k must be between 1 and 1280, got 0"),
        (["--overwrite", "--resume"], "--overwrite and --resume exclude each other"),
        (["-f", "missing.yaml"], "values file missing.yaml not found"),
        (
            ["-f", str(Path(__file__).with_name("fixtures") / "bad-values-wrong-type.yaml")],
            "at '/driver/cores': got string, want integer",
        ),
        (["--name", "Not_A_DNS_Name"], "invalid release name"),
        (["--chart", "/nonexistent"], "helm chart not found at /nonexistent"),
    ],
)
def test_bad_options_fail_in_one_line(helm, args: list[str], message: str):
    proc = featurizer(
        "submit", "k8s", "--dry-run", "--input", "s3a://b/i", "--output", "s3a://b/o", *args
    )
    assert proc.returncode == 2
    assert message in one_error_line(proc)


# ---- kubeconfig and API server -----------------------------------------------------------------


def test_missing_kubeconfig(tmp_path: Path):
    proc = featurizer("status", "--kubeconfig", str(tmp_path / "none"))
    assert proc.returncode == 2
    assert f"kubeconfig {tmp_path / 'none'} not found" in one_error_line(proc)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("just text", "is not a kubeconfig"),
        ("clusters: [", "cannot read kubeconfig"),
        ("apiVersion: v1\nkind: Config\nclusters: []\n", "current-context"),
    ],
)
def test_broken_kubeconfig(tmp_path: Path, content: str, message: str):
    path = tmp_path / "config"
    path.write_text(content)
    proc = featurizer("logs", "--kubeconfig", str(path))
    assert proc.returncode == 2 and message in one_error_line(proc)


def test_unknown_context(tmp_path: Path, closed_port: int):
    path = kubeconfig(tmp_path / "config", f"https://127.0.0.1:{closed_port}")
    proc = featurizer("delete", "--kubeconfig", str(path), "--context", "elsewhere")
    assert proc.returncode == 2
    assert f"cannot use kubeconfig {path} context elsewhere" in one_error_line(proc)


@pytest.mark.parametrize(
    "command",
    [
        ["submit", "k8s", "--input", "s3a://b/i", "--output", "s3a://b/o"],
        ["status", "--wait"],
        ["logs"],
        ["delete", "old-run"],
    ],
)
def test_unreachable_api_server_is_one_line_naming_the_server_and_the_refusal(
    helm, tmp_path: Path, closed_port: int, command: list[str]
):
    path = kubeconfig(tmp_path / "config", f"https://127.0.0.1:{closed_port}")
    started = time.monotonic()
    proc = featurizer(*command, "--kubeconfig", str(path))
    assert proc.returncode == 2
    line = one_error_line(proc)
    server = f"https://127.0.0.1:{closed_port}"
    assert line.startswith(f"featurizer: error: cannot reach the Kubernetes API server at {server}")
    # The reason is the refusal (ECONNREFUSED, in the platform's own words), not a timeout.
    assert os.strerror(errno.ECONNREFUSED) in line and "timed out" not in line.lower(), line
    # A refusal is immediate: the command must not sit out even one API call's timeout
    # (REQUEST_TIMEOUT, 30 s) retrying it. Process start, the kubernetes import and (for
    # submit) a helm render take a few seconds on a loaded 2-core machine, well under it.
    assert time.monotonic() - started < REQUEST_TIMEOUT


def test_cluster_takes_any_api_client(tmp_path: Path, closed_port: int):
    """The Cluster object is built from an ApiClient, so it runs against any API server."""
    client = k8s.api_client(str(kubeconfig(tmp_path / "c", f"https://127.0.0.1:{closed_port}")))
    cluster = k8s.Cluster(client, namespace="jobs")
    assert (cluster.server, cluster.namespace) == (f"https://127.0.0.1:{closed_port}", "jobs")
    with pytest.raises(ConfigError, match="cannot reach the Kubernetes API server"):
        cluster.ensure_crd()


# ---- API errors read as one line that says what to do ------------------------------------------


def api_error(status: int, reason: str, body: object) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = body if isinstance(body, str) else json.dumps(body)
    return exc


def test_missing_crd_is_named():
    # What an API server answers for an API group nobody registered.
    error = k8s.explain(
        api_error(404, "Not Found", "404 page not found\n"),
        "creating SparkApplication x",
        "https://127.0.0.1:6443",
        "featurizer",
    )
    assert isinstance(error, ConfigError)
    assert str(error) == (
        "the SparkApplication CRD (sparkapplications.sparkoperator.k8s.io/v1beta2) is not "
        "installed on https://127.0.0.1:6443: install the kubeflow spark-operator "
        "(make operator-install, or its helm chart)"
    )


def test_missing_object_is_not_mistaken_for_a_missing_crd():
    body = status_body(
        404,
        "NotFound",
        'sparkapplications.sparkoperator.k8s.io "x" not found',
        {"name": "x", "group": "sparkoperator.k8s.io", "kind": "sparkapplications"},
    )
    error = k8s.explain(
        api_error(404, "Not Found", body),
        "reading SparkApplication x",
        "https://127.0.0.1:6443",
        "jobs",
    )
    assert (
        str(error)
        == "reading SparkApplication x: sparkapplications 'x' not found in namespace jobs"
    )
    assert not isinstance(error, ConfigError)


def test_rbac_denial_says_what_is_missing():
    message = (
        'sparkapplications.sparkoperator.k8s.io is forbidden: User "dev" cannot create '
        'resource "sparkapplications" in API group "sparkoperator.k8s.io" in the '
        'namespace "jobs"'
    )
    error = k8s.explain(
        api_error(403, "Forbidden", status_body(403, "Forbidden", message)),
        "creating SparkApplication x",
        "https://127.0.0.1:6443",
        "jobs",
    )
    assert str(error) == (
        f"creating SparkApplication x: forbidden by RBAC: {message}; ask for "
        f"a Role in namespace jobs that allows it"
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "rejected the kubeconfig's credentials (401 Unauthorized)"),
        (422, "the API server rejected the SparkApplication: spec.driver.cores: Invalid value"),
        (500, "answered 500 Internal Server Error: spec.driver.cores: Invalid value"),
    ],
)
def test_401_422_and_500_read_as_credentials_invalid_object_and_server_error(
    status: int, expected: str
):
    reason = {401: "Unauthorized", 422: "Unprocessable Entity", 500: "Internal Server Error"}
    body = status_body(status, reason[status], "spec.driver.cores: Invalid value")
    error = k8s.explain(
        api_error(status, reason[status], body),
        "creating SparkApplication x",
        "https://127.0.0.1:6443",
        "jobs",
    )
    assert isinstance(error, FeaturizerError) and expected in str(error)


def test_outcome_and_state_helpers():
    app = {
        "metadata": {"name": "x"},
        "spec": {"driver": {}},
        "status": {
            "applicationState": {"state": "FAILED", "errorMessage": "driver exited 1"},
            "driverInfo": {"podName": "x-driver-2"},
        },
    }
    assert (k8s.app_state(app), k8s.driver_pod(app)) == ("FAILED", "x-driver-2")
    with pytest.raises(k8s.ApplicationFailed, match="FAILED: driver exited 1") as failed:
        k8s.outcome(app, "jobs")
    assert failed.value.exit_code == 1
    fresh = {"metadata": {"name": "y"}, "spec": {"driver": {}}}
    assert (k8s.app_state(fresh), k8s.driver_pod(fresh)) == ("NEW", "y-driver")
    assert k8s.outcome({**app, "status": {"applicationState": {"state": "COMPLETED"}}}, "j") == 0


# ---- the command line --------------------------------------------------------------------------


def test_commands_are_listed_and_cheap_to_load():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sys, featurizer.cli as cli\n"
                "cli._parser()\n"
                "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'yaml')))"
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    top = featurizer("--help").stdout
    assert all(command in top for command in ("submit", "status", "logs", "delete"))
    assert "k8s" in featurizer("submit", "--help").stdout


# ---- safe submits ----------------------------------------------------------------------------


def test_each_output_gets_its_own_application_name():
    names = {
        output: k8s.app_name(output)
        for output in (
            "s3a://bucket/features/fruits-train",
            "s3a://bucket/other/fruits-train",
            "s3a://bucket/features/Fruits 360 Test",
            "s3a://b/" + "x" * 80,
        )
    }
    assert len(set(names.values())) == len(names)  # no two outputs share one
    assert (
        k8s.app_name("s3a://bucket/features/fruits-train/")
        == names["s3a://bucket/features/fruits-train"]
    )  # the same output: the same
    assert names["s3a://bucket/features/Fruits 360 Test"].startswith("featurizer-fruits-360-test-")
    for name in names.values():  # what the chart accepts
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 50, name


def _app(state: str | None) -> dict:
    status = {"applicationState": {"state": state}} if state else {}
    return {
        "metadata": {
            "name": "featurizer-out-1234abcd",
            "namespace": "featurizer",
            "creationTimestamp": "2026-12-01T10:00:00Z",
        },
        "status": status,
    }


@pytest.mark.parametrize(
    "state",
    [
        None,
        "SUBMITTED",
        "RUNNING",
        "PENDING_RERUN",
        "SUCCEEDING",
        "FAILING",
        "INVALIDATING",
        "UNKNOWN",
    ],
)
def test_a_submit_never_replaces_a_live_application_unless_told(state):
    with pytest.raises(
        ConfigError,
        match=r"featurizer-out-1234abcd is \w+ \(created "
        r"2026-12-01T10:00:00Z\) and is not replaced.*--replace",
    ):
        k8s.replacement(_app(state), replace=False)
    assert k8s.replacement(_app(state), replace=True) == "recreate"


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED"])
def test_a_finished_application_is_replaced_by_the_next_submit(state):
    assert k8s.replacement(_app(state), replace=False) == "recreate"
    assert k8s.replacement(None, replace=False) == "create"


# ---- waiting, Ctrl-C and following the log, against an API server on 127.0.0.1 -----------------

APPS_PATH = r"/apis/sparkoperator\.k8s\.io/v1beta2/namespaces/featurizer/sparkapplications"


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


def test_submit_gives_up_waiting_after_wait_timeout_with_exit_3(helm, api_server, tmp_path):
    config = api_server.kubeconfig(tmp_path / "config")
    proc = featurizer(
        "submit",
        "k8s",
        "-f",
        str(KIND_VALUES),
        "--name",
        "slow",
        "--input",
        "s3a://b/i",
        "--output",
        "s3a://b/o",
        "--wait-timeout",
        "2",
        "--no-logs",
        "--kubeconfig",
        str(config),
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "featurizer: error: SparkApplication slow still RUNNING after 2 s; it keeps running: "
        "`featurizer status slow -n featurizer --wait`"
    )
    assert len(api_server.sent("POST", APPS_PATH)) == 1  # created once
    watches = [q for q in api_server.sent("GET", APPS_PATH) if q.get("watch") == ["true"]]
    assert watches and all(int(q["timeoutSeconds"][0]) <= 2 for q in watches), watches
    assert not api_server.sent("DELETE", APPS_PATH + "/slow")  # "it keeps running"


def test_ctrl_c_while_submit_waits_leaves_the_application_running(helm, api_server, tmp_path):
    config = api_server.kubeconfig(tmp_path / "config")
    command = [
        *("submit", "k8s", "-f", str(KIND_VALUES), "--name", "long"),
        *("--input", "s3a://b/i", "--output", "s3a://b/o", "--no-logs"),
        *("--kubeconfig", str(config)),
    ]
    process = subprocess.Popen(
        with_default_sigint([str(FEATURIZER), *command]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert api_server.watching.wait(60), "the submitter never started watching"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, err
    assert err.strip().splitlines()[-1] == (
        "featurizer: error: interrupted; SparkApplication long keeps running "
        "(`featurizer status long -n featurizer --wait`)"
    )
    assert not api_server.sent("DELETE", APPS_PATH + "/long")
    assert "Traceback" not in err


def test_logs_follow_streams_the_driver_log_while_it_is_written(api_server, tmp_path):
    api_server.add("run-1")
    chunks = api_server.logs.setdefault("run-1-driver", queue.Queue())
    config = api_server.kubeconfig(tmp_path / "config")
    process = subprocess.Popen(
        [str(FEATURIZER), "logs", "run-1", "--follow", "--kubeconfig", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        chunks.put("featurizer: found 100 images\n")
        # Printed while the stream is still open: the command follows, it does not collect.
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready, "nothing printed in 60 s while the log stream was open"
        assert process.stdout.readline() == "featurizer: found 100 images\n"
        assert process.poll() is None
        chunks.put("featurizer run complete\n")
        chunks.put(END)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out == "featurizer run complete\n"
    (query,) = api_server.sent("GET", r"/api/v1/namespaces/featurizer/pods/run-1-driver/log")
    assert query["follow"] == ["true"] and query["container"] == ["spark-kubernetes-driver"]
