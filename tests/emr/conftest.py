"""A real local AWS endpoint for the EMR launcher: moto's standalone server on 127.0.0.1.

It serves S3 and emr-containers over HTTP; the launcher reaches it through the standard
AWS_ENDPOINT_URL variable, with dummy credentials. Its state is reset before each test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from servers import MotoServer

REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/featurizer-emr-job"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/featurizer-emr:test"


@pytest.fixture
def aws(moto: MotoServer, monkeypatch) -> dict[str, str]:
    """Environment pointing boto3 (in-process and in subprocesses) at the emptied server."""
    moto.reset()
    env = moto.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


@pytest.fixture
def clients(aws):
    import boto3

    return boto3.client("s3"), boto3.client("emr-containers")


@pytest.fixture
def virtual_cluster(clients) -> str:
    _, emr = clients
    return emr.create_virtual_cluster(
        name="featurizer-test",
        clientToken="vc-token",
        containerProvider={
            "id": "test-eks",
            "type": "EKS",
            "info": {"eksInfo": {"namespace": "featurizer"}},
        },
    )["id"]


@pytest.fixture
def buckets(clients) -> dict[str, str]:
    """An input bucket holding two images and an empty results bucket."""
    s3, _ = clients
    for bucket in ("data", "results"):
        s3.create_bucket(Bucket=bucket)
    for key in ("fruits/Training/Apple Red/0_100.jpg", "fruits/Training/Banana/0_100.jpg"):
        s3.put_object(Bucket="data", Key=key, Body=b"\xff\xd8\xff")
    return {"input": "s3://data/fruits/Training", "output": "s3://results/fruits-train"}


@pytest.fixture
def submit_args(virtual_cluster: str, buckets: dict[str, str]):
    """argv of `featurizer submit emr` for the test cluster and buckets, plus `extra`."""

    def args(*extra: str) -> list[str]:
        return [
            "submit",
            "emr",
            "--virtual-cluster-id",
            virtual_cluster,
            "--execution-role-arn",
            ROLE_ARN,
            "--image",
            IMAGE,
            "--input",
            buckets["input"],
            "--output",
            buckets["output"],
            *extra,
        ]

    return args


@pytest.fixture(scope="session")
def featurizer_bin() -> str:
    return str(Path(sys.executable).with_name("featurizer"))
