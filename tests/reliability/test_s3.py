"""Object storage: the job over s3a:// and s3:// against a real S3 API on 127.0.0.1 (moto's
server with IAM authentication on), configuration mistakes, and outages mid-run."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from featurizer import sample_data

from processes import kill_session, wait_for
from servers import MotoServer, read_s3_output, s3_keys

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGES = 100
# Short S3A timeouts and one retry keep the fault tests bounded (the lasting outage: 204 s
# with 3 S3A retries x 2 SDK attempts, 87 s with 1 x 1; the timeouts stay at 5 s so that a
# slow answer from moto under load is not taken for an outage).
FAST_FAIL = (
    "--conf",
    "spark.hadoop.fs.s3a.connection.timeout=5s",
    "--conf",
    "spark.hadoop.fs.s3a.connection.establish.timeout=5s",
    "--conf",
    "spark.hadoop.fs.s3a.retry.limit=1",
    "--conf",
    "spark.hadoop.fs.s3a.attempts.maximum=1",
)


@pytest.fixture(scope="module")
def jars() -> str:
    """hadoop-aws + the AWS SDK bundle for PySpark's Hadoop (checksum-verified, cached)."""
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "fetch-jars.sh")], capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.fixture(scope="module")
def s3(moto_servers, tmp_path_factory):
    """moto with authentication: only the IAM key made in the first 3 calls is accepted."""
    server = moto_servers(env={"INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    iam = boto3.client(
        "iam",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="featurizer")
    key = iam.create_access_key(UserName="featurizer")["AccessKey"]
    iam.put_user_policy(
        UserName="featurizer",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    server.credentials = (key["AccessKeyId"], key["SecretAccessKey"])
    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    folder = tmp_path_factory.mktemp("sample")
    sample_data.generate(folder, seed=5)
    client.create_bucket(Bucket="data")
    client.create_bucket(Bucket="results")
    for path in sorted(folder.rglob("*.jpg")):
        client.upload_file(str(path), "data", "fruits/" + str(path.relative_to(folder)))
    server.client = client
    return server


def featurizer(
    s3: MotoServer,
    jars: str,
    *args: str,
    key: tuple[str, str] | None = None,
    session: bool = False,
) -> subprocess.Popen:
    """`featurizer run` against the server (in a session of its own if `session`)."""
    env = {**os.environ, **s3.env(*(key or s3.credentials)), "FEATURIZER_JARS": jars}
    return subprocess.Popen(
        [str(BIN / "featurizer"), "run", "--master", "local[2]", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=session,
    )


def finish(process: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("featurizer: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_s3a_to_s3a_round_trip(s3, jars):
    code, out, err = finish(
        featurizer(
            s3,
            jars,
            "--input",
            "s3a://data/fruits",
            "--output",
            "s3a://results/run",
            "--pca-k",
            "4",
        )
    )
    assert code == 0, err[-3000:]
    objects = {
        o["Key"] for o in s3.client.list_objects_v2(Bucket="results", Prefix="run/")["Contents"]
    }
    assert "run/_SUCCESS" in objects and not any(k.startswith("run/_work") for k in objects)
    manifest = json.loads(
        s3.client.get_object(Bucket="results", Key="run/manifest.json")["Body"].read()
    )
    assert manifest["counts"]["featurized"] == IMAGES
    assert s3.credentials[1] not in json.dumps(manifest)
    parts = [k for k in objects if k.startswith("run/features/") and k.endswith(".parquet")]
    rows = sum(
        pq.read_table(
            io.BytesIO(s3.client.get_object(Bucket="results", Key=k)["Body"].read())
        ).num_rows
        for k in parts
    )
    assert rows == IMAGES


def test_s3_scheme_reads_through_s3a(s3, jars, tmp_path):
    code, _, err = finish(
        featurizer(
            s3,
            jars,
            "--input",
            "s3://data/fruits/Test",
            "--output",
            str(tmp_path / "out"),
            "--pca-k",
            "2",
        )
    )
    assert code == 0, err[-3000:]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["found"] == 20


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("--input", "s3a://no-such-bucket/fruits", "--output", "OUT"),
            "cannot read input s3a://no-such-bucket/fruits: The specified bucket does not exist "
            "(Service: S3, Status Code: 404,",
        ),
        (
            ("--input", "s3a://data/fruits", "--output", "s3a://no-such-bucket/run"),
            "output s3a://no-such-bucket/run is not writable: The specified bucket does not "
            "exist (Service: S3, Status Code: 404,",
        ),
        (
            ("--input", "s3a://data/nothing-here", "--output", "OUT"),
            "cannot read input s3a://data/nothing-here: Path does not exist: "
            "s3a://data/nothing-here",
        ),
    ],
    ids=["missing-input-bucket", "missing-output-bucket", "empty-input-prefix"],
)
def test_configuration_mistakes_fail_in_one_line_without_retrying_the_404(
    s3, jars, tmp_path, args, expected
):
    args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
    before = s3.requests()
    code, _, err = finish(featurizer(s3, jars, *args, *FAST_FAIL))
    assert code == 2, err[-3000:]
    line = error_line(err)
    assert expected in line
    assert "Traceback" not in err
    # Fast because a 404 is final: each request for the missing bucket or prefix is sent
    # once (an S3A retry would repeat it at once), and only a few of them are sent.
    missing = "/no-such-bucket" if "no-such-bucket" in " ".join(args) else "/data/nothing-here"
    prefix = "prefix=" + missing.rsplit("/", 1)[1]
    sent = [r for r in s3.requests()[len(before) :] if r[1].startswith(missing) or prefix in r[1]]
    assert sent, "the run never asked S3"
    assert all(a != b for a, b in zip(sent, sent[1:])), sent
    assert len(sent) <= 10, sent


def test_wrong_credentials_fail_fast_in_one_line(s3, jars, tmp_path):
    code, _, err = finish(
        featurizer(
            s3,
            jars,
            "--input",
            "s3a://data/fruits",
            "--output",
            str(tmp_path / "out"),
            *FAST_FAIL,
            key=("AKIAWRONGWRONGWRONG1", "wrong-secret"),
        )
    )
    assert code == 2, err[-3000:]
    line = error_line(err)
    assert "cannot read input s3a://data/fruits" in line
    assert "(Service: S3, Status Code: 403," in line, line  # S3's refusal, named as such
    assert "wrong-secret" not in err
    assert not (tmp_path / "out").exists()


def _batches(output: Path) -> int:
    return len(list((output / "_work" / "featurized").glob("batch=*/_SUCCESS")))


def _wait_batches(process: subprocess.Popen, output: Path, count: int) -> None:
    wait_for(
        lambda: _batches(output) >= count,
        600,
        f"{count} staged micro-batch(es)",
        interval=0.1,
        process=process,
    )


def test_short_outage_is_retried(s3, jars, tmp_path):
    output = tmp_path / "out"
    process = featurizer(
        s3,
        jars,
        "--input",
        "s3a://data/fruits",
        "--output",
        str(output),
        "--files-per-batch",
        "20",
        "--pca-k",
        "2",
    )
    _wait_batches(process, output, 1)
    s3.pause()  # the server hangs: requests time out
    time.sleep(6)
    s3.resume()
    code, _, err = finish(process)
    assert code == 0, err[-3000:]
    rows = pq.read_table(output / "features").to_pandas()
    assert len(rows) == IMAGES and rows["path"].is_unique


def test_lasting_outage_fails_clearly_without_success_marker(s3, jars, tmp_path):
    output = tmp_path / "out"
    process = featurizer(
        s3,
        jars,
        "--input",
        "s3a://data/fruits",
        "--output",
        str(output),
        "--files-per-batch",
        "20",
        "--pca-k",
        "2",
        *FAST_FAIL,
    )
    _wait_batches(process, output, 1)
    s3.pause()
    try:
        code, _, err = finish(process, timeout=600)
    finally:
        s3.resume()
    assert code == 1, err[-3000:]
    line = error_line(err)
    assert f"featurizing into file://{output}/_work/featurized failed: " in line, line
    # The innermost cause, not a wrapper: S3A's (the stream's listing) or pyarrow's (a
    # worker's read), whichever gave up first.
    assert re.search(r"timed out|timeout was reached", line, re.I), line
    assert not (output / "_SUCCESS").exists()
    assert (output / "_work").exists()  # --resume can continue it


ODD_KEYS = [
    "12:30:01",
    "100%",
    "a%41b",
    "take#2",
    "why?",
    "shot[1]",
    "set{a,b}",
    "back\\slash",
    " lead",
    "trail ",
    "k=v",
    "Café Crème 🍎",
]


def test_odd_key_names_are_featurized_with_exact_paths_and_labels(s3, jars, tmp_path):
    sources = iter(s3_keys(s3.client, "data", "fruits/"))  # distinct images: PCA needs them
    expected = {}
    for name in ODD_KEYS:
        for key, label in ((f"odd/Names/{name}.jpg", "Names"), (f"odd/{name}/x.jpg", name)):
            s3.client.copy_object(
                Bucket="data", Key=key, CopySource={"Bucket": "data", "Key": next(sources)}
            )
            expected[f"s3a://data/{key}"] = label
    code, _, err = finish(
        featurizer(
            s3, jars, "--input", "s3a://data/odd", "--output", str(tmp_path / "out"), "--pca-k", "1"
        )
    )
    assert code == 0, err[-3000:]
    rows = pq.read_table(tmp_path / "out" / "features").to_pandas()
    assert dict(zip(rows["path"], rows["label"])) == expected


def test_an_object_deleted_during_the_run_is_recorded(s3, jars, tmp_path):
    for key in s3_keys(s3.client, "data", "fruits/"):
        s3.client.copy_object(
            Bucket="data",
            Key=key.replace("fruits/", "shrinking/", 1),
            CopySource={"Bucket": "data", "Key": key},
        )
    output = tmp_path / "out"
    process = featurizer(
        s3,
        jars,
        "--input",
        "s3a://data/shrinking",
        "--output",
        str(output),
        "--files-per-batch",
        "20",
        "--pca-k",
        "2",
        "--max-error-rate",
        "0.1",
    )
    _wait_batches(process, output, 1)
    staged = {
        path
        for part in (output / "_work" / "featurized").glob("batch=*")
        for path in pq.read_table(part).column("path").to_pylist()
    }
    listed = s3.client.list_objects_v2(Bucket="data", Prefix="shrinking/")["Contents"]
    newest = sorted(listed, key=lambda item: (item["LastModified"], item["Key"]))
    gone = [
        f"s3a://data/{item['Key']}" for item in newest if f"s3a://data/{item['Key']}" not in staged
    ][-3:]
    for uri in gone:
        s3.client.delete_object(Bucket="data", Key=uri.removeprefix("s3a://data/"))
    code, _, err = finish(process)
    assert code == 0, err[-3000:]
    errors = pq.read_table(output / "errors").to_pandas()
    assert dict(zip(errors["path"], errors["error"])) == {
        uri: "file disappeared during the run" for uri in gone
    }
    assert pq.read_table(output / "features").num_rows == IMAGES - 3


def test_a_live_lease_on_s3_refuses_a_second_run(s3, jars):
    run = ("--input", "s3a://data/fruits", "--output", "s3a://results/leased", "--pca-k", "2")
    first = featurizer(s3, jars, *run, "--files-per-batch", "20", session=True)
    wait_for(
        lambda: s3_keys(s3.client, "results", "leased/_work/featurized/"),
        300,
        "the first run's first staged object",
        interval=0.2,
        process=first,
    )
    lease = json.loads(
        s3.client.get_object(Bucket="results", Key="leased/_lease.json")["Body"].read()
    )
    # The first run is held (alive, its lease younger than the TTL) while the second tries:
    # 100 images go faster than a second JVM starts.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = featurizer(s3, jars, *run, "--overwrite")
        code, _, err = finish(second)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert code == 2, err[-3000:]
    assert f"is being written by run {lease['run_id']}" in error_line(err)
    code, _, err = finish(first)
    assert code == 0, err[-3000:]
    assert not s3_keys(s3.client, "results", "leased/_lease.json")
    assert s3_keys(s3.client, "results", "leased/_SUCCESS")


def test_a_pca_model_on_s3_projects_other_images_exactly_as_fitted(s3, jars):
    """Fit on Training in S3, then project Test with that model, read from S3."""
    code, _, err = finish(
        featurizer(
            s3,
            jars,
            "--input",
            "s3a://data/fruits",
            "--output",
            "s3a://results/pca-fit",
            "--pca-k",
            "6",
            "--no-report",
        )
    )
    assert code == 0, err[-3000:]
    code, _, err = finish(
        featurizer(
            s3,
            jars,
            "--input",
            "s3a://data/fruits/Test",
            "--output",
            "s3a://results/pca-test",
            "--pca-model",
            "s3a://results/pca-fit/pca_model",
            "--no-report",
        )
    )
    assert code == 0, err[-3000:]
    fitted, _ = read_s3_output(s3.client, "results", "pca-fit")
    projected, manifest = read_s3_output(s3.client, "results", "pca-test")
    assert manifest["pca"]["model_source"] == "s3a://results/pca-fit/pca_model"
    original = dict(zip(fitted.column("path").to_pylist(), fitted.column("pca").to_pylist()))
    rows = dict(zip(projected.column("path").to_pylist(), projected.column("pca").to_pylist()))
    assert len(rows) == 20 and all(rows[path] == original[path] for path in rows)


def test_packed_shards_on_s3_give_the_loose_features_with_far_fewer_requests(s3, jars):
    """`featurizer pack` from S3 to S3, then the same job over the shards and over the loose
    objects: identical features and labels. The S3 requests each run sends are counted from
    the server's request log (figures for BENCHMARKS.md, not asserted)."""
    env = {**os.environ, **s3.env(*s3.credentials), "FEATURIZER_JARS": jars}
    packed = subprocess.run(
        [
            str(BIN / "featurizer"),
            "pack",
            "s3a://data/fruits",
            "s3a://results/packed",
            "--images-per-file",
            "50",
            "--master",
            "local[2]",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert packed.returncode == 0, packed.stderr[-3000:]
    requests, reads = {}, {}
    for name, bucket, prefix in (("loose", "data", "fruits"), ("packed", "results", "packed")):
        before, read_before = s3.request_count(), s3.request_count(bucket, prefix)
        code, _, err = finish(
            featurizer(
                s3,
                jars,
                "--input",
                f"s3a://{bucket}/{prefix}",
                "--output",
                f"s3a://results/from-{name}",
                "--pca-k",
                "2",
                "--no-report",
            )
        )
        assert code == 0, err[-3000:]
        requests[name] = s3.request_count() - before
        reads[name] = s3.request_count(bucket, prefix) - read_before
    loose, _ = read_s3_output(s3.client, "results", "from-loose")
    shards, manifest = read_s3_output(s3.client, "results", "from-packed")
    a = dict(
        zip(
            loose.column("path").to_pylist(),
            zip(loose.column("label").to_pylist(), loose.column("features").to_pylist()),
        )
    )
    b = dict(
        zip(
            shards.column("path").to_pylist(),
            zip(shards.column("label").to_pylist(), shards.column("features").to_pylist()),
        )
    )
    assert a == b and len(a) == IMAGES
    print(
        f"\nS3 requests for {IMAGES} images, the whole run (listing to commit): loose "
        f"{requests['loose']}, packed (2 shards) {requests['packed']}; reading the input: "
        f"loose {reads['loose']}, packed {reads['packed']}"
    )


def test_an_incremental_run_on_s3_adds_exactly_the_new_objects(s3, jars):
    """40 objects featurized, 15 more arrive: --incremental adds those 15 and leaves the 40
    rows as they were; the stream's record (_state/) lives in the bucket too."""
    keys = sorted(s3_keys(s3.client, "data", "fruits/Training/"))[:55]
    for key in keys[:40]:
        s3.client.copy_object(
            Bucket="data",
            Key="grow/" + key.removeprefix("fruits/"),
            CopySource={"Bucket": "data", "Key": key},
        )
    args = ("--input", "s3a://data/grow", "--output", "s3a://results/grow", "--no-report")
    code, _, err = finish(featurizer(s3, jars, *args, "--pca-k", "3"))
    assert code == 0, err[-3000:]
    before, _ = read_s3_output(s3.client, "results", "grow")
    assert s3_keys(s3.client, "results", "grow/_state/checkpoint/")
    for key in keys[40:]:
        s3.client.copy_object(
            Bucket="data",
            Key="grow/" + key.removeprefix("fruits/"),
            CopySource={"Bucket": "data", "Key": key},
        )
    code, _, err = finish(featurizer(s3, jars, *args, "--incremental"))
    assert code == 0, err[-3000:]
    after, manifest = read_s3_output(s3.client, "results", "grow")
    old = {row["path"]: row for row in before.to_pylist()}
    new = {row["path"]: row for row in after.to_pylist()}
    added = {"s3a://data/grow/" + key.removeprefix("fruits/") for key in keys[40:]}
    assert set(new) == set(old) | added and len(new) == 55
    assert all(new[path] == row for path, row in old.items())
    assert (manifest["counts"]["featurized"], manifest["counts"]["added"]) == (55, 15)
    assert not s3_keys(s3.client, "results", "grow/_work/")


def test_overwrite_on_s3_replaces_a_complete_output_and_the_refusals_name_the_flag(s3, jars):
    """A complete output in S3: a plain rerun and --resume are refused in one line (exit 2,
    the output untouched); --overwrite replaces it, objects of the old run included."""
    args = ("--input", "s3a://data/fruits/Test", "--output", "s3a://results/redo", "--no-report")
    code, _, err = finish(featurizer(s3, jars, *args, "--pca-k", "2"))
    assert code == 0, err[-3000:]
    _, first = read_s3_output(s3.client, "results", "redo")
    s3.client.put_object(Bucket="results", Key="redo/stray.txt", Body=b"from an older run")
    before = sorted(s3_keys(s3.client, "results", "redo/"))

    for extra, message in (
        ((), "output s3a://results/redo is not empty; pass --overwrite to replace it"),
        (("--resume",), "s3a://results/redo is already complete; use --overwrite to redo it"),
    ):
        code, _, err = finish(featurizer(s3, jars, *args, "--pca-k", "2", *extra))
        assert code == 2, err[-3000:]
        assert message in error_line(err)
        assert sorted(s3_keys(s3.client, "results", "redo/")) == before

    code, _, err = finish(featurizer(s3, jars, *args, "--pca-k", "3", "--overwrite"))
    assert code == 0, err[-3000:]
    table, manifest = read_s3_output(s3.client, "results", "redo")
    assert manifest["run_id"] != first["run_id"]
    assert table.num_rows == 20 and len(table.column("pca")[0]) == 3
    assert not s3_keys(s3.client, "results", "redo/stray.txt")
    assert not s3_keys(s3.client, "results", "redo/_work/")


def test_resume_on_s3_finishes_a_killed_run_with_every_image_once(s3, jars):
    """A run killed (SIGKILL, its whole session) after its first micro-batch is in S3 leaves
    _work/ there and no _SUCCESS; a plain rerun is refused and --resume finishes it."""
    args = ("--input", "s3a://data/fruits", "--output", "s3a://results/killed", "--no-report")
    first = featurizer(s3, jars, *args, "--pca-k", "2", "--files-per-batch", "20", session=True)
    try:
        wait_for(
            lambda: s3_keys(s3.client, "results", "killed/_work/featurized/"),
            600,
            "the first micro-batch in S3",
            interval=0.2,
            process=first,
        )
    finally:
        kill_session(first)
    assert not s3_keys(s3.client, "results", "killed/_SUCCESS")

    code, _, err = finish(featurizer(s3, jars, *args, "--pca-k", "2", "--files-per-batch", "20"))
    assert code == 2, err[-3000:]
    assert (
        "output s3a://results/killed is not empty; it holds an interrupted run: pass --resume "
        "to continue it or --overwrite to start over"
    ) in error_line(err)

    code, _, err = finish(
        featurizer(s3, jars, *args, "--pca-k", "2", "--files-per-batch", "20", "--resume")
    )
    assert code == 0, err[-3000:]
    table, manifest = read_s3_output(s3.client, "results", "killed")
    paths = table.column("path").to_pylist()
    assert len(paths) == IMAGES == len(set(paths)) == manifest["counts"]["featurized"]
    assert not s3_keys(s3.client, "results", "killed/_work/")
