"""The job as SparkApplications on a real cluster (hack/cluster): the kubeflow spark-operator
runs spark-submit, the driver pod starts executor pods, images are read from and Parquet is
written to the S3 server, and the outputs are checked by reading them back.

Covered: k8s/ manifests dry-run by the API server (the real CRD schemas and the operator's
webhooks), a bad manifest rejected; the submitter's one-line errors for a missing service
account, an RBAC denial and bad credentials; `helm install` of the chart -> COMPLETED;
`featurizer submit k8s` / `status` / `logs` / `delete` -> COMPLETED, and a bad input URI ->
FAILED with a non-zero exit and a one-line message.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import yaml

from conftest import (
    BUCKET,
    CHART,
    NAMESPACE,
    ROOT,
    SAMPLE_IMAGES,
    VALUES,
    app_or_none,
    follow,
    read_output,
    run,
    wait_for,
)

RUN_TIMEOUT = 900  # one application, submission to COMPLETED / FAILED
FEATURIZER = ROOT / ".venv" / "bin" / "featurizer"
RELEASE = "featurizer"


def driver_log(core, pod: str, lines: int = 60) -> str:
    try:
        return core.read_namespaced_pod_log(
            pod, NAMESPACE, container="spark-kubernetes-driver", tail_lines=lines
        )
    except Exception as exc:
        return f"(no driver log: {exc})"


def check_output(s3, prefix: str, k: int | None = None) -> dict:
    table, manifest = read_output(s3, prefix)
    paths = table.column("path").to_pylist()
    assert table.num_rows == SAMPLE_IMAGES and len(set(paths)) == SAMPLE_IMAGES
    assert all(p.startswith(f"s3a://{BUCKET}/sample/") for p in paths)
    assert {len(v) for v in table.column("features").to_pylist()} == {1280}
    k = k or manifest["pca"]["k"]
    assert {len(v) for v in table.column("pca").to_pylist()} == {k}
    counts = {key: manifest["counts"][key] for key in ("found", "selected", "featurized", "failed")}
    assert counts == {
        "found": SAMPLE_IMAGES,
        "selected": SAMPLE_IMAGES,
        "featurized": SAMPLE_IMAGES,
        "failed": 0,
    }
    labels = set(table.column("label").to_pylist())
    assert len(labels) > 1 and all(label for label in labels)
    return manifest


def featurizer(*args: str | Path, timeout: float = RUN_TIMEOUT + 120):
    return run(FEATURIZER, *args, timeout=timeout, check=False)


def values_args() -> list[str]:
    return [arg for path in VALUES for arg in ("-f", str(path))]


# ---- the API server and the CRD, no Spark -------------------------------------------------


def test_manifests_dry_run_on_the_server(kubectl: str, tmp_path: Path) -> None:
    for manifest in sorted((ROOT / "k8s").glob("*.yaml")):
        out = run(kubectl, "apply", "--dry-run=server", "-f", manifest).stdout
        assert "sparkapplication.sparkoperator.k8s.io/" in out, out
    # A SparkApplication that breaks the CRD's schema is refused by the API server.
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "kind.yaml").read_text()))
    app = next(d for d in docs if d and d["kind"] == "SparkApplication")
    app["spec"]["executor"]["instances"] = "two"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(app))
    proc = run(kubectl, "apply", "--dry-run=server", "-f", bad, check=False)
    assert proc.returncode != 0 and "spec.executor.instances" in proc.stderr, proc.stderr


def test_submit_refuses_a_namespace_without_the_service_account(helm: str, sample: str) -> None:
    proc = featurizer(
        "submit",
        "k8s",
        *values_args(),
        "-n",
        "default",
        "--input",
        sample,
        "--output",
        f"s3a://{BUCKET}/output/never",
    )
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip().splitlines()
    assert (
        len(message) == 1
        and "service account 'featurizer' not found in namespace default" in message[0]
    ), proc.stderr


def kubeconfig_with_token(path: Path, token: str) -> Path:
    """A copy of the admin kubeconfig (same server and CA) that authenticates with `token`."""
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    config["users"] = [{"name": "token", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "token"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def nobody(core, tmp_path_factory) -> Path:
    """A kubeconfig for a real service account that no Role grants anything."""
    from kubernetes import client

    account = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    try:
        core.create_namespaced_service_account(NAMESPACE, account)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=900)
    )
    token = core.create_namespaced_service_account_token("nobody", NAMESPACE, request)
    return kubeconfig_with_token(
        tmp_path_factory.mktemp("nobody") / "kubeconfig", token.status.token
    )


def test_submit_forbidden_by_rbac(nobody: Path, helm: str, sample: str) -> None:
    proc = featurizer(
        "submit",
        "k8s",
        *values_args(),
        "--kubeconfig",
        nobody,
        "--input",
        sample,
        "--output",
        f"s3a://{BUCKET}/output/never",
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "forbidden by RBAC" in lines[0]
        and "system:serviceaccount:featurizer:nobody" in lines[0]
    ), proc.stderr


def test_status_with_bad_credentials(tmp_path: Path) -> None:
    proc = featurizer("status", "--kubeconfig", kubeconfig_with_token(tmp_path / "kc", "bogus"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "401 Unauthorized" in lines[0], proc.stderr


# ---- SparkApplications --------------------------------------------------------------------


@pytest.fixture(scope="module")
def release(helm: str, core, custom, sample: str):
    """`helm install` of the chart (RBAC + the SparkApplication of values-kind.yaml, which
    reads the sample and writes s3a://featurizer/output/sample); uninstalled at the end."""
    run(helm, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False, timeout=300)
    started = time.monotonic()
    run(helm, "install", RELEASE, CHART, "-n", NAMESPACE, *values_args(), timeout=300)
    app, states = follow(custom, RELEASE)
    yield app, states, time.monotonic() - started
    run(helm, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", timeout=300)


def test_helm_install_completes(release, core, s3) -> None:
    app, states, seconds = release
    pod = app["status"]["driverInfo"]["podName"]
    assert states[-1] == "COMPLETED", (
        f"states {states}: {app['status']['applicationState']}\n{driver_log(core, pod)}"
    )
    assert "RUNNING" in states
    manifest = check_output(s3, "output/sample")
    print(
        f"\nhelm install: states {' -> '.join(states)}; {manifest['counts']['featurized']} "
        f"images, k={manifest['pca']['k']}, {seconds:.0f} s from install to COMPLETED "
        f"(job {manifest['timings_s']['total']:.0f} s)"
    )


def test_pods_carry_the_chart_settings(release, core) -> None:
    """The operator's webhook applied the chart's pod settings; the cluster's policy put the
    pods on the node's network."""
    app, _, _ = release
    driver = core.read_namespaced_pod(app["status"]["driverInfo"]["podName"], NAMESPACE)
    assert driver.spec.host_network is True
    assert driver.spec.service_account_name == "featurizer"
    container = driver.spec.containers[0]
    assert container.security_context.run_as_user == 185
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert [ref.secret_ref.name for ref in container.env_from or []] == ["featurizer-s3"]
    assert driver.status.phase == "Succeeded"
    # Spark removes its executor pods at the end; the operator recorded them.
    executors = app["status"].get("executorState") or {}
    assert executors and set(executors.values()) <= {"COMPLETED", "FAILED", "RUNNING"}, app[
        "status"
    ]


def test_submit_status_logs(release, s3, sample: str) -> None:
    name, output = "featurizer-submit", f"s3a://{BUCKET}/output/submit"
    started = time.monotonic()
    proc = featurizer(
        "submit",
        "k8s",
        *values_args(),
        "--name",
        name,
        "--input",
        sample,
        "--output",
        output,
        "--pca-k",
        "8",
        "--wait-timeout",
        str(RUN_TIMEOUT),
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}"
    assert f"SparkApplication {name} COMPLETED" in proc.stderr, proc.stderr
    assert "RUNNING" in proc.stderr
    check_output(s3, "output/submit", k=8)

    status = featurizer("status", name)
    assert status.returncode == 0 and status.stdout.startswith(f"{name}\tCOMPLETED"), status
    logs = featurizer("logs", name, "--tail", "200")
    assert logs.returncode == 0, logs.stderr
    assert output in logs.stdout, logs.stdout[-2000:]
    print(f"\nsubmit k8s: COMPLETED in {seconds:.0f} s; status: {status.stdout.strip()}")


def test_submit_bad_input_fails(release, tmp_path: Path, custom) -> None:
    name = "featurizer-bad"
    no_retry = tmp_path / "no-retry.yaml"
    no_retry.write_text("restartPolicy:\n  type: Never\n")
    proc = featurizer(
        "submit",
        "k8s",
        *values_args(),
        "-f",
        no_retry,
        "--name",
        name,
        "--input",
        f"s3a://{BUCKET}/no-such-folder",
        "--output",
        f"s3a://{BUCKET}/output/bad",
    )
    assert proc.returncode == 1, f"{proc.stderr[-3000:]}"
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"featurizer: error: SparkApplication {name} FAILED:"), proc.stderr[
        -3000:
    ]
    assert f"featurizer logs {name}" in last
    # The job's own reason, read from the driver log, leads the message.
    assert f"cannot read input s3a://{BUCKET}/no-such-folder" in last, last

    status = featurizer("status", name)
    assert status.returncode == 1 and f"{name}\tFAILED" in status.stdout, status
    logs = featurizer("logs", name)
    assert f"cannot read input s3a://{BUCKET}/no-such-folder" in logs.stdout, logs.stdout[-3000:]

    deleted = featurizer("delete", name)
    assert deleted.returncode == 0, deleted.stderr
    wait_for(lambda: app_or_none(custom, name) is None, 60, f"{name} to be deleted")
    gone = featurizer("status", name)
    assert gone.returncode == 1 and "not found" in gone.stderr, gone.stderr
    print(f"\nbad input: exit {proc.returncode}; {last}")


def test_environment_is_the_cluster_namespace() -> None:
    """Everything above ran inside the cluster's network namespace: only loopback exists."""
    assert [name for _, name in socket.if_nameindex()] == ["lo"]
