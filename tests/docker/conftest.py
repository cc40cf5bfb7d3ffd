"""Containerized tests of the image (`make image-test`; not part of plain `make test`).

Everything runs on this machine over 127.0.0.1: containers use the host network (there is
no Docker bridge), the S3-compatible server is moto's standalone server started here.
Every container, process and wait is bounded and cleaned up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from servers import MotoServer

DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
JOB = "local:///opt/featurizer/job/main.py"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "featurizer",
    "AWS_SECRET_ACCESS_KEY": "featurizer-test",
    "AWS_REGION": "us-east-1",
}


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} ... failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def image() -> str:
    name = os.environ.get("IMAGE", "featurizer:local")
    if docker("image", "inspect", name, check=False).returncode != 0:
        pytest.fail(f"image {name} not found: build it with `make image` (or run make image-test)")
    return name


class Containers:
    """Named containers on the host network, removed at the end of the test session."""

    def __init__(self, image: str) -> None:
        self.image, self.prefix, self.names = image, f"featurizer-test-{uuid.uuid4().hex[:6]}", []

    def start(
        self,
        role: str,
        *command: str,
        env: dict[str, str] | None = None,
        cpus: str = "1",
        memory: str = "4g",
        volumes: tuple[str, ...] = (),
    ) -> str:
        name = f"{self.prefix}-{role}"
        args = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "--cpus",
            cpus,
            "--memory",
            memory,
        ]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        for volume in volumes:
            args += ["-v", volume]
        docker(*args, self.image, *command)
        self.names.append(name)
        return name

    def logs(self, name: str) -> str:
        result = docker("logs", name, check=False, timeout=30)
        return result.stdout + result.stderr

    def exit_code(self, name: str, timeout: float) -> int:
        return int(docker("wait", name, timeout=timeout).stdout.strip())

    def running(self, name: str) -> bool:
        result = docker("inspect", "-f", "{{.State.Running}}", name, check=False, timeout=30)
        return result.stdout.strip() == "true"

    def remove_all(self) -> None:
        for name in self.names:
            docker("rm", "-f", name, check=False, timeout=60)
        self.names.clear()


@pytest.fixture(scope="module")
def containers(image: str) -> Iterator[Containers]:
    started = Containers(image)
    yield started
    started.remove_all()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1 (see docker/README.md for why moto)."""
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server.url


@pytest.fixture(scope="session")
def s3(s3_server: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name=S3_CREDENTIALS["AWS_REGION"],
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
