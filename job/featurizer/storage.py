"""URIs and file operations on any Hadoop file system (local, s3a://, s3://, hdfs://).

Driver-side only. File operations go through the JVM's Hadoop FileSystem so that local
paths and object stores behave the same and use the same credentials Spark uses; a local
output's lease, taken before the JVM starts, uses `LocalStorage`, the same operations in
Python.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from featurizer.errors import ConfigError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
S3_SCHEMES = ("s3", "s3a", "s3n")


def normalize(uri: str) -> str:
    """A plain path becomes an absolute file:// URI; URIs keep their scheme.
    Trailing slashes are dropped so that joins and prefix checks are exact."""
    uri = uri.strip()
    if not uri:
        raise ConfigError("empty path")
    if uri.startswith("file:") and not uri.startswith("file://"):
        uri = "file://" + uri[len("file:") :]  # file:/x (Spark's form) -> file:///x
    if not _SCHEME.match(uri):
        uri = "file://" + os.path.abspath(os.path.expanduser(uri))
    scheme = scheme_of(uri)
    if scheme in S3_SCHEMES and not re.match(r"^[a-z0-9]+://[^/]+", uri):
        raise ConfigError(f"{uri}: an S3 URI needs a bucket, e.g. s3a://bucket/prefix")
    stripped = uri.rstrip("/")
    return stripped if not stripped.endswith(":/") and not stripped.endswith("://") else uri


def scheme_of(uri: str) -> str:
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else "file"


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def is_inside(child: str, parent: str) -> bool:
    """True if `child` is `parent` or below it (both normalized URIs)."""
    child, parent = _comparable(child), _comparable(parent)
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def _comparable(uri: str) -> str:
    scheme = scheme_of(uri)
    if scheme in S3_SCHEMES:  # s3:// and s3a:// name the same objects
        return "s3://" + uri.split("://", 1)[1]
    return uri


def local_path(uri: str) -> str | None:
    """The local file system path of a `file:///x` URI, or of Spark's spelling of it in
    rows (`file:/x`), else None. Nothing else changes: names may start or end with spaces."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return uri[len("file:") :] if uri.startswith("file:/") else None


def s3_endpoint(env: Mapping[str, str] = os.environ) -> str | None:
    """The S3-compatible endpoint, if not AWS' own (AWS SDK variable names)."""
    return (
        env.get("FEATURIZER_S3_ENDPOINT")
        or env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
    )


def s3a_hadoop_conf(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Hadoop settings so s3a:// (and s3:// outside EMR) reach the configured endpoint.
    Credentials are left to S3A's provider chain (env vars, profile, IRSA, Pod Identity)."""
    conf: dict[str, str] = {}
    endpoint = s3_endpoint(env)
    if endpoint:
        conf["fs.s3a.endpoint"] = endpoint
        conf["fs.s3a.path.style.access"] = "true"
        conf["fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https")).lower()
        conf["fs.s3a.endpoint.region"] = (
            env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
    return conf


class Storage:
    """Small file operations through Hadoop's FileSystem API (via py4j)."""

    def __init__(self, spark: Any) -> None:
        self._jvm = spark.sparkContext._jvm
        self._hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def _fs(self, uri: str) -> Any:
        return self._path(uri).getFileSystem(self._hadoop_conf)

    def exists(self, uri: str) -> bool:
        return bool(self._fs(uri).exists(self._path(uri)))

    def list_names(self, uri: str) -> list[str]:
        """Names directly under a folder ([] if it does not exist)."""
        if not self.exists(uri):
            return []
        statuses = self._fs(uri).listStatus(self._path(uri))
        return sorted(status.getPath().getName() for status in statuses)

    def size(self, uri: str) -> int:
        return int(self._fs(uri).getFileStatus(self._path(uri)).getLen())

    def delete(self, uri: str) -> None:
        self._fs(uri).delete(self._path(uri), True)

    def mkdirs(self, uri: str) -> None:
        self._fs(uri).mkdirs(self._path(uri))

    def rename(self, source: str, target: str) -> None:
        if not self._fs(source).rename(self._path(source), self._path(target)):
            raise OSError(f"could not move {source} to {target}")

    def copy(self, source: str, target: str) -> None:
        """A folder (recursively) or a file; the source stays."""
        fs = self._jvm.org.apache.hadoop.fs
        if not fs.FileUtil.copy(
            self._fs(source),
            self._path(source),
            self._fs(target),
            self._path(target),
            False,
            self._hadoop_conf,
        ):
            raise OSError(f"could not copy {source} to {target}")

    def write_bytes(self, uri: str, data: bytes) -> None:
        stream = self._fs(uri).create(self._path(uri), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def read_bytes(self, uri: str) -> bytes:
        stream = self._fs(uri).open(self._path(uri))
        try:
            return bytes(stream.readAllBytes())  # py4j copies byte[] by value
        finally:
            stream.close()


class LocalStorage:
    """Storage's operations on `file:` URIs in Python, without the JVM: a local output's
    lease is written and settles while Spark starts (pipeline.run). Like Hadoop's local file
    system in a featurizer session (session._no_local_checksum_files), it keeps no
    checksum files."""

    @staticmethod
    def _local(uri: str) -> str:
        path = local_path(uri)
        if path is None:
            raise ValueError(f"not a local URI: {uri}")
        return path

    def exists(self, uri: str) -> bool:
        return os.path.exists(self._local(uri))

    def list_names(self, uri: str) -> list[str]:
        """Names directly under a folder ([] if it does not exist)."""
        try:
            return sorted(os.listdir(self._local(uri)))
        except FileNotFoundError:
            return []

    def delete(self, uri: str) -> None:
        path = self._local(uri)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Written whole, then renamed into place: a reader never sees half of it."""
        path = self._local(uri)
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a file where a folder must be
            blocker = folder
            while not os.path.lexists(blocker):
                blocker = os.path.dirname(blocker)
            # Hadoop's words for it, as when the rest of the run writes there
            raise NotADirectoryError(f"Parent path is not a directory: file:{blocker}") from None
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".", delete=False) as handle:
            handle.write(data)
        os.chmod(handle.name, 0o644)  # as Hadoop's would be (temporary files are 0600)
        os.replace(handle.name, path)

    def read_bytes(self, uri: str) -> bytes:
        with open(self._local(uri), "rb") as handle:
            return handle.read()


def java_message(exc: BaseException) -> str:
    """The first line of a py4j/Java exception, without the Java stack."""
    text = str(exc).strip().splitlines()
    for line in text:
        if "Exception" in line or "Error" in line:
            return line.strip().split(": ", 1)[-1][:300]
    return (text[0] if text else type(exc).__name__)[:300]
