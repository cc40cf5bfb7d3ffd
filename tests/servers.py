"""Real servers for tests, on 127.0.0.1 only: moto's standalone AWS server (S3, IAM,
emr-containers). One implementation, used by every test package."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REGION = "us-east-1"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port nothing listens on: bound by this socket (so nothing else can take it)
    but not listening, so every connection to it is refused, for as long as the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class MotoServer:
    """`python -m moto.server` on 127.0.0.1; restartable, pausable (SIGSTOP) for fault tests.

    Without `port` the server binds port 0 and the port it got is read back from its log, so
    no other process can take the port between choosing and binding it."""

    def __init__(
        self, log_dir: Path, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port
        self._log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log", dir=log_dir)[1])
        self._env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "the server has not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> MotoServer:
        if self.port is not None and self._answers():
            raise RuntimeError(f"port {self.port} is taken")
        offset = self._log.stat().st_size  # a restart appends to the same log
        with self._log.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port or 0)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {self._log.read_text()[-2000:]}")
            if self.port is None:
                with self._log.open("rb") as log:
                    log.seek(offset)
                    bound = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", log.read())
                self.port = int(bound.group(1)) if bound else None
            if self.port is not None and self._answers():
                return self
            time.sleep(0.2)

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

    def requests(self) -> list[tuple[str, str]]:
        """(method, path with query) of every HTTP request served so far, in order, from the
        server's request log (one line each)."""
        seen = []
        for line in self._log.read_text(errors="replace").splitlines():
            line = _ANSI.sub("", line)  # werkzeug colours the lines of 4xx and 5xx answers
            request = line.split('"')[1].split() if line.count('"') >= 2 else []
            if len(request) >= 2 and request[0] in ("GET", "PUT", "POST", "HEAD", "DELETE"):
                seen.append((request[0], request[1]))
        return seen

    def request_count(self, bucket: str | None = None, prefix: str = "") -> int:
        """HTTP requests served so far; with `bucket`, only those for its keys under `prefix`
        (objects, or LISTs of that prefix)."""
        from urllib.parse import parse_qs, unquote, urlsplit

        count = 0
        for _method, target in self.requests():
            if bucket is None:
                count += 1
                continue
            url = urlsplit(target)
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
