"""The local cluster of hack/cluster (`make cluster-e2e`; not part of plain `make test`).

The tests run inside the cluster's network namespace (`cluster.sh exec`), so 127.0.0.1 is the
node's: the API server (KUBECONFIG), and the S3 server started here on port 9000, which the
driver and executor pods (host network) reach at the same address.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from processes import wait_for  # noqa: F401  (the cluster tests import it from here)
from servers import read_s3_output

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "featurizer"
VALUES = [CHART / "values-kind.yaml", Path(__file__).with_name("values.yaml")]  # + image_values
NAMESPACE = "featurizer"
BUCKET = "featurizer"
S3_PORT = 9000  # tests/cluster/values.yaml
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "featurizer", "AWS_SECRET_ACCESS_KEY": "featurizer-test"}
SAMPLE_IMAGES = 100  # featurizer sample-data, scale 1
GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
RUN_TIMEOUT = 900  # one application, submission to COMPLETED / FAILED


def run(*cmd: str | Path, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd[:4]))} ... exited {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="session", autouse=True)
def image_values(tmp_path_factory) -> Path:
    """The image under test (IMAGE, as imported by cluster.sh) as one more values file."""
    image = os.environ.get("IMAGE", "featurizer:local")
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        pytest.fail(f"IMAGE={image} has no tag: use REPOSITORY:TAG (never latest)")
    path = tmp_path_factory.mktemp("values") / "image.yaml"
    path.write_text(f"image:\n  repository: {name}\n  tag: {tag}\n")
    VALUES.append(path)
    return path


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = os.environ.get("KUBECTL", "")
    if not os.access(path, os.X_OK):
        pytest.fail("KUBECTL (the cluster's kubectl) not set: run `make cluster-e2e`")
    return path


@pytest.fixture(scope="session")
def api(kubectl: str):
    """An ApiClient for the cluster; fails unless its node is Ready."""
    from kubernetes import client, config

    if not os.path.isfile(os.environ.get("KUBECONFIG", "")):
        pytest.fail("KUBECONFIG not set: run the tests with `make cluster-e2e`")
    api = config.new_client_from_config(persist_config=False)
    node = client.CoreV1Api(api).read_node("127.0.0.1", _request_timeout=10)
    ready = {c.type: c.status for c in node.status.conditions}.get("Ready")
    assert ready == "True", f"node 127.0.0.1 is not Ready: {node.status.conditions}"
    return api


@pytest.fixture(scope="session")
def core(api):
    from kubernetes import client

    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def custom(api):
    from kubernetes import client

    return client.CustomObjectsApi(api)


@pytest.fixture(scope="session")
def s3_server(moto_servers) -> str:
    """moto's S3 server on the node's 127.0.0.1:9000 (pods use the node's network)."""
    return moto_servers(port=S3_PORT).url


@pytest.fixture(scope="session")
def s3(s3_server: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(scope="session")
def sample(s3, core, tmp_path_factory) -> str:
    """The synthetic sample in the S3 server, and the Secret the chart's pods read it with."""
    from kubernetes import client

    from featurizer import sample_data

    folder = tmp_path_factory.mktemp("sample")
    assert sample_data.generate(folder) == SAMPLE_IMAGES
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(folder.rglob("*.jpg")):
        s3.upload_file(str(path), BUCKET, f"sample/{path.relative_to(folder)}")
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="featurizer-s3"), string_data=S3_CREDENTIALS
    )
    try:
        core.delete_namespaced_secret("featurizer-s3", NAMESPACE)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
    core.create_namespaced_secret(NAMESPACE, secret)
    return f"s3a://{BUCKET}/sample"


def read_output(s3, prefix: str):
    return read_s3_output(s3, BUCKET, prefix)


def app_or_none(custom, name: str) -> dict | None:
    from kubernetes.client import ApiException

    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def state(app: dict | None) -> str:
    return (((app or {}).get("status") or {}).get("applicationState") or {}).get("state", "")


def follow(custom, name: str, timeout: float = RUN_TIMEOUT) -> tuple[dict, list[str]]:
    """Poll the application until COMPLETED or FAILED; the distinct states it went through."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app = app_or_none(custom, name)
        current = state(app)
        if current and (not seen or seen[-1] != current):
            seen.append(current)
        if current in ("COMPLETED", "FAILED"):
            return app, seen
        time.sleep(2)
    raise AssertionError(f"{name} still {seen[-1:] or 'NEW'} after {timeout} s (states {seen})")
