"""The Python workers' own reads (reading.FileReader): local files, and objects in S3 (moto on
127.0.0.1) with any key name, read a batch ahead and bounded by S3A's timeouts."""

from __future__ import annotations

import threading
import time

import boto3
import pyarrow as pa
import pytest

from featurizer import arrow_files, reading, sources

ODD_NAMES = ["plain", "100%", "a%41b", " lead", "trail ", "Café Crème 🍎", "back\\slash", "why?"]


def batch(paths: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({"path": paths})


def test_the_next_batch_is_read_while_this_one_is_worked_on(tmp_path):
    files = []
    for index in range(6):
        (tmp_path / f"{index}.jpg").write_bytes(bytes([index]) * (index + 1))
        files.append(f"file:{tmp_path / f'{index}.jpg'}")
    pulled: list[int] = []

    def batches():
        for start in range(0, 6, 2):
            pulled.append(start // 2)
            yield batch(files[start : start + 2])

    seen: list[list[str]] = []
    for given, reads in reading.FileReader().ahead(batches()):
        # Batch n is handed over only once batch n + 1 is being read (the last: alone).
        assert pulled == list(range(min(len(seen) + 2, 3)))
        seen.append(given.column(0).to_pylist())
        start = 2 * (len(seen) - 1)
        assert reads == [(bytes([i]) * (i + 1), None) for i in range(start, start + 2)]
    assert seen == [files[0:2], files[2:4], files[4:6]]


@pytest.fixture
def store(moto, monkeypatch):
    """A bucket on the session's moto server, and this process's AWS settings pointing at it
    (the SDK's default chain finds the credentials, as a worker's does)."""
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=moto.url)
    bucket = f"reading-{time.monotonic_ns()}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def test_objects_of_any_name_are_read_and_a_deleted_one_is_an_error_row(store):
    client, bucket = store
    paths, expected = [], []
    for index, name in enumerate(ODD_NAMES):
        key = f"images/{name}/{name}.jpg"
        client.put_object(Bucket=bucket, Key=key, Body=f"image {index}".encode())
        paths.append(f"s3a://{bucket}/{key}")
        expected.append(f"image {index}".encode())
    client.delete_object(Bucket=bucket, Key=f"images/{ODD_NAMES[0]}/{ODD_NAMES[0]}.jpg")
    contents, errors = reading.FileReader(arrow_files.s3_filesystem()).read(
        [*paths, f"s3://{bucket}/images/never.jpg"]
    )
    assert contents == [None, *expected[1:], None]
    assert errors == [reading.DISAPPEARED, *[None] * (len(paths) - 1), reading.DISAPPEARED]


def test_a_stalled_store_fails_the_read_within_s3as_timeouts_and_retries(spark, moto, store):
    client, bucket = store
    client.put_object(Bucket=bucket, Key="a.jpg", Body=b"image")
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    settings = {
        "fs.s3a.connection.timeout": "1s",
        "fs.s3a.connection.establish.timeout": "1s",
        "fs.s3a.attempts.maximum": "0",
        "fs.s3a.retry.limit": "1",  # 2 attempts in all
    }
    previous = {name: conf.get(name) for name in settings}
    for name, value in settings.items():
        conf.set(name, value)
    try:
        reader = reading.FileReader(arrow_files.s3_filesystem(spark))
    finally:
        for name, value in previous.items():
            conf.unset(name) if value is None else conf.set(name, value)
    assert reader.read([f"s3a://{bucket}/a.jpg"]) == ([b"image"], [None])
    moto.pause()
    started = time.monotonic()
    try:
        with pytest.raises(OSError, match=r"a\.jpg.*Timeout was reached"):
            reader.read([f"s3a://{bucket}/a.jpg"])
    finally:
        moto.resume()
    # 2 attempts of 1 s and a backoff; without S3A's settings: the SDK's 3 of 3 s.
    assert 2 <= time.monotonic() - started < 6


def test_workers_read_local_files_and_s3_with_credentials_pyarrow_finds(spark, tmp_path):
    def reader(uri: str) -> reading.FileReader | None:
        return sources.FileSource(uri, scan=None).reader(spark)

    local = reader(f"file://{tmp_path}")
    assert local is not None and local.fs is None
    for uri in ("s3a://bucket/in", "s3://bucket/in"):
        found = reader(uri)
        assert found is not None and found.fs.type_name == "s3"
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    key = "fs.s3a.aws.credentials.provider"
    default = conf.get(key)
    try:  # a provider only S3A knows: the JVM reads (binaryFile's `content`)
        conf.set(key, "com.example.CustomProvider")
        assert reader("s3a://bucket/in") is None
    finally:
        conf.set(key, default)


def test_the_drivers_reads_on_s3_run_several_at_once_in_order_and_bounded(store):
    client, bucket = store
    location = arrow_files.locate(f"s3a://{bucket}/out")
    running, most, started = 0, 0, 0
    lock = threading.Lock()

    def read(item: int) -> int:
        nonlocal running, most, started
        with lock:
            running, started = running + 1, started + 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return item * 10

    results = []
    for result in location.each(read, range(30)):
        with lock:  # never more than S3_READS read ahead of the caller
            assert started - len(results) <= arrow_files.S3_READS
        results.append(result)
    assert results == [item * 10 for item in range(30)]
    assert 1 < most <= arrow_files.S3_READS

    # The end of a run's per-task files: all of them, in the listing's order.
    for index in range(12):
        key = f"out/batch={index % 3}/_part-{index:05d}.moments.npz"
        client.put_object(Bucket=bucket, Key=key, Body=f"sums {index}".encode())
    client.put_object(Bucket=bucket, Key="out/batch=0/part-00000.parquet", Body=b"rows")
    read_back = list(arrow_files.side_files(f"s3a://{bucket}/out", "moments.npz"))
    expected = sorted(
        (f"out/batch={index % 3}/_part-{index:05d}", f"sums {index}".encode())
        for index in range(12)
    )
    assert read_back == [data for _, data in expected]
