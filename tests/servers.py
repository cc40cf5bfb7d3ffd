"""Real servers for tests, on 127.0.0.1 only: moto's standalone AWS server (S3, IAM,
emr-containers). One implementation, used by every test package."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """`python -m moto.server` on 127.0.0.1; restartable, pausable (SIGSTOP) for fault tests."""

    def __init__(
        self, log_dir: Path, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = Path(log_dir) / f"moto-{self.port}.log"
        self._env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> MotoServer:
        if self._answers():
            raise RuntimeError(f"port {self.port} is taken")
        with self._log.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {self._log.read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
            self._process.terminate()
            self._process.wait(timeout=15)

    def request_count(self, bucket: str | None = None, prefix: str = "") -> int:
        """HTTP requests served so far, from the server's request log (one line each); with
        `bucket`, only those for its keys under `prefix` (objects, or LISTs of that prefix)."""
        from urllib.parse import parse_qs, unquote, urlsplit

        count = 0
        for line in self._log.read_text(errors="replace").splitlines():
            request = line.split('"')[1].split() if line.count('"') >= 2 else []
            if len(request) < 2 or request[0] not in ("GET", "PUT", "POST", "HEAD", "DELETE"):
                continue
            if bucket is None:
                count += 1
                continue
            url = urlsplit(request[1])
            name, _, key = unquote(url.path).lstrip("/").partition("/")
            listed = parse_qs(url.query).get("prefix", [""])[0]
            if name == bucket and (key or listed).startswith(prefix):
                count += 1
        return count

    def pause(self) -> None:
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._process.send_signal(signal.SIGCONT)

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def env(self, key_id: str = "testing", secret: str = "testing") -> dict[str, str]:
        """Environment that points AWS SDKs and S3A at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def s3_keys(s3, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def read_s3_output(s3, bucket: str, prefix: str):
    """A committed run's features/ (one Arrow table) and manifest.json, read from S3."""
    import io
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    assert s3_keys(s3, bucket, f"{prefix}/_SUCCESS"), f"{prefix} was not committed (no _SUCCESS)"
    parts = [key for key in s3_keys(s3, bucket, f"{prefix}/features/") if key.endswith(".parquet")]
    table = pa.concat_tables(
        pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        for key in parts
    )
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read()
    return table, json.loads(body)
