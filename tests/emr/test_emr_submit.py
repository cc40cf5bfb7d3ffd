"""`featurizer submit emr` against moto's standalone server on 127.0.0.1 (S3 + emr-containers).

In-process calls go through `cli.main`; Ctrl-C behaviour is tested on real processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from featurizer import cli
from featurizer.config import RunConfig
from featurizer.launch import emr_spec

from processes import wait_for, with_default_sigint


def _with(args: list[str], **options: str) -> list[str]:
    """args with the values of some options replaced (option_name=value)."""
    args = list(args)
    for name, value in options.items():
        args[args.index("--" + name.replace("_", "-")) + 1] = value
    return args


def _jobs(emr, virtual_cluster: str) -> list[dict]:
    return emr.list_job_runs(virtualClusterId=virtual_cluster)["jobRuns"]


def _describe(emr, virtual_cluster: str, job_id: str) -> dict:
    return emr.describe_job_run(id=job_id, virtualClusterId=virtual_cluster)["jobRun"]


def test_submit_uploads_pod_templates_and_starts_the_job(
    clients, virtual_cluster, buckets, submit_args, capsys
):
    s3, emr = clients
    assert cli.main(submit_args("--pca-k", "16")) == 0
    job_id = capsys.readouterr().out.strip()

    job = _describe(emr, virtual_cluster, job_id)
    assert job["state"] == "RUNNING"
    args = submit_args()
    assert job["executionRoleArn"] == args[args.index("--execution-role-arn") + 1]
    assert job["releaseLabel"] == emr_spec.RELEASE_LABEL
    driver = job["jobDriver"]["sparkSubmitJobDriver"]
    assert driver["entryPoint"] == emr_spec.ENTRY_POINT
    # Retries are on by default (3 attempts), so the job resumes a failed attempt.
    assert driver["entryPointArguments"] == [
        "--input",
        buckets["input"],
        "--output",
        buckets["output"],
        "--pca-k",
        "16",
        "--resume",
    ]
    expected = RunConfig(input=buckets["input"], output=buckets["output"], pca_k=16, resume=True)
    assert RunConfig.from_argv(driver["entryPointArguments"]) == expected

    # The pod templates the request names are in S3, byte-identical to the built-in ones.
    listing = s3.list_objects_v2(Bucket="results", Prefix="_featurizer/emr/pod-templates/")
    keys = sorted(item["Key"] for item in listing["Contents"])
    assert [key.rsplit("/", 1)[1] for key in keys] == ["driver.yaml", "executor.yaml"]
    for key in keys:
        role = key.rsplit("/", 1)[1].removesuffix(".yaml")
        body = s3.get_object(Bucket="results", Key=key)["Body"].read().decode()
        assert body == emr_spec.pod_template_yaml(role)


def test_identical_retry_reuses_the_client_token(
    moto, clients, virtual_cluster, submit_args, capsys
):
    _, emr = clients
    assert cli.main(submit_args()) == 0
    first = capsys.readouterr()
    assert cli.main(submit_args()) == 0  # e.g. after a lost response
    second = capsys.readouterr()
    assert cli.main(submit_args("--pca-k", "8")) == 0  # a different job
    third = capsys.readouterr()

    tokens = [
        _describe(emr, virtual_cluster, out.out.strip())["clientToken"]
        for out in (first, second, third)
    ]
    # What each submit sent (moto keeps every call's token; EMR would answer the repeated
    # token with the original job run): the same request, the same token; another, another.
    assert tokens[0] == tokens[1] != tokens[2]
    assert re.fullmatch("[0-9a-f]{64}", tokens[0]), tokens[0]  # sha256: the API's maximum
    assert f"client token {tokens[0]}" in first.err
    # One StartJobRun call per submit: the launcher does not call it again by itself.
    starts = [
        r for r in moto.requests() if r == ("POST", f"/virtualclusters/{virtual_cluster}/jobruns")
    ]
    assert len(starts) == 3, moto.requests()


def test_dry_run_prints_a_valid_request_and_calls_nothing(
    clients, virtual_cluster, submit_args, capsys, monkeypatch
):
    s3, emr = clients
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    assert cli.main(submit_args("--dry-run")) == 0
    out = capsys.readouterr()
    request = json.loads(out.out)
    emr_spec.validate("StartJobRun", request)
    assert "nothing was called" in out.err
    monkeypatch.undo()
    assert _jobs(emr, virtual_cluster) == []
    assert "Contents" not in s3.list_objects_v2(Bucket="results")


@dataclass
class Waiting:
    """`featurizer submit emr --wait` running, its stderr in a file (read while it runs)."""

    process: subprocess.Popen
    stderr: Path

    def err(self) -> str:
        return self.stderr.read_text()

    def finish(self, answer: str = "") -> tuple[str, str]:
        out, _ = self.process.communicate(answer, timeout=60)
        return out, self.err()


def _start_waiting(featurizer_bin, submit_args, aws, tmp_path: Path, *extra: str) -> Waiting:
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as sink:  # the child keeps its own descriptor
        process = subprocess.Popen(
            with_default_sigint(
                [featurizer_bin, *submit_args("--wait", "--poll-seconds", "0.2", *extra)]
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            env={**os.environ, **aws},
        )
    return Waiting(process, stderr)


def _wait_for_running(waiting: Waiting, emr, virtual_cluster: str) -> str:
    """The job id, once the waiter has printed that it saw the run RUNNING."""

    def running() -> str | None:
        jobs = _jobs(emr, virtual_cluster)
        return (
            jobs[0]["id"] if jobs and f"job run {jobs[0]['id']}: RUNNING" in waiting.err() else None
        )

    try:
        return wait_for(running, 60, "a RUNNING line", interval=0.1, process=waiting.process)
    except AssertionError as exc:
        waiting.process.kill()
        pytest.fail(f"the waiter never reported a RUNNING job run ({exc}):\n{waiting.err()}")


def test_wait_follows_the_run_to_a_terminal_state(
    featurizer_bin, aws, clients, virtual_cluster, submit_args, tmp_path
):
    _, emr = clients
    waiting = _start_waiting(featurizer_bin, submit_args, aws, tmp_path)
    job_id = _wait_for_running(waiting, emr, virtual_cluster)
    emr.cancel_job_run(id=job_id, virtualClusterId=virtual_cluster)  # e.g. an operator
    out, err = waiting.finish()

    assert waiting.process.returncode == 1
    assert out.strip() == job_id
    states = [line.split(": ", 2)[-1] for line in err.splitlines() if f"job run {job_id}:" in line]
    assert states[0] == "RUNNING" and states[-1].startswith("CANCELLED")
    assert f"spark-{job_id}-driver/(stdout.gz|stderr.gz)" in err  # log locations
    assert f"/{virtual_cluster}/jobs/{job_id}/" in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"featurizer: error: job run {job_id} ended CANCELLED")
    )


@pytest.mark.parametrize("how", ["flag", "answer"])
def test_ctrl_c_cancels_the_run(
    featurizer_bin, aws, clients, virtual_cluster, submit_args, tmp_path, how
):
    _, emr = clients
    extra = ("--cancel-on-interrupt",) if how == "flag" else ()
    waiting = _start_waiting(featurizer_bin, submit_args, aws, tmp_path, *extra)
    job_id = _wait_for_running(waiting, emr, virtual_cluster)
    waiting.process.send_signal(signal.SIGINT)
    _, err = waiting.finish("y\n" if how == "answer" else "")

    assert _describe(emr, virtual_cluster, job_id)["state"] == "CANCELLED"
    assert f"cancel requested for job run {job_id}" in err
    assert ("cancel job run" in err) == (how == "answer")  # asked only without the flag
    assert waiting.process.returncode == 1


def test_ctrl_c_without_consent_leaves_the_run_alone(
    featurizer_bin, aws, clients, virtual_cluster, submit_args, tmp_path
):
    _, emr = clients
    waiting = _start_waiting(featurizer_bin, submit_args, aws, tmp_path)
    job_id = _wait_for_running(waiting, emr, virtual_cluster)
    waiting.process.send_signal(signal.SIGINT)
    _, err = waiting.finish("n\n")

    assert waiting.process.returncode == 1
    assert _describe(emr, virtual_cluster, job_id)["state"] == "RUNNING"
    assert (
        f"aws emr-containers cancel-job-run --id {job_id} --virtual-cluster-id {virtual_cluster}"
    ) in err.splitlines()[-1]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_missing_staging_bucket_is_one_line_exit_2_and_no_job_run(
    clients, virtual_cluster, submit_args, capsys
):
    _, emr = clients
    code = cli.main(submit_args("--staging-uri", "s3://no-such-bucket/featurizer"))
    assert code == 2
    line = _one_error_line(capsys)
    assert line.startswith("featurizer: error: --staging-uri s3://no-such-bucket/featurizer")
    assert "bucket does not exist" in line
    assert _jobs(emr, virtual_cluster) == []


def test_bad_role_arn_is_refused_before_any_call(clients, virtual_cluster, submit_args, capsys):
    _, emr = clients
    code = cli.main(_with(submit_args(), execution_role_arn="arn:aws:iam::12345:user/me"))
    assert code == 2
    assert "is not an IAM role ARN" in _one_error_line(capsys)
    assert _jobs(emr, virtual_cluster) == []


def test_an_unknown_virtual_cluster_is_one_line_naming_the_region_and_the_fix(
    clients, submit_args, capsys
):
    code = cli.main(_with(submit_args(), virtual_cluster_id="doesnotexist0123456789"))
    assert code == 2
    line = _one_error_line(capsys)
    assert "virtual cluster doesnotexist0123456789 not found in us-east-1" in line
    assert "list-virtual-clusters" in line


def test_an_empty_input_prefix_is_one_line_exit_2(clients, virtual_cluster, submit_args, capsys):
    code = cli.main(_with(submit_args(), input="s3://data/nothing-here"))
    assert code == 2
    assert "--input s3://data/nothing-here holds no objects" in _one_error_line(capsys)


def test_a_local_input_path_is_refused_as_not_an_s3_uri(
    virtual_cluster, submit_args, capsys, tmp_path
):
    code = cli.main(_with(submit_args(), input=str(tmp_path)))
    assert code == 2
    assert "--input must be an S3 URI" in _one_error_line(capsys)


def test_a_job_template_dry_run_prints_a_valid_request_with_the_parameters(
    virtual_cluster, submit_args, capsys
):
    args = submit_args("--job-template-id", "tmpl0123", "--pca-k", "12", "--dry-run")
    assert cli.main(args) == 0
    request = json.loads(capsys.readouterr().out)
    emr_spec.validate("StartJobRun", request)
    assert request["jobTemplateId"] == "tmpl0123"
    assert "jobDriver" not in request and "executionRoleArn" not in request
    params = request["jobTemplateParameters"]
    assert (params["PcaOption"], params["PcaValue"]) == ("--pca-k", "12")
    assert params["Input"] == args[args.index("--input") + 1]

    assert cli.main(submit_args("--job-template-id", "tmpl0123", "--limit", "5", "--dry-run")) == 2
    assert "--limit cannot be passed through the job template" in _one_error_line(capsys)


# ---- retries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "attempts", "resume"),
    [
        ((), 3, True),  # default: EMR retries, the retry resumes
        (("--max-attempts", "5"), 5, True),
        (("--max-attempts", "1"), None, False),  # no retries: no --resume either
        (("--overwrite",), 3, False),  # a retry starts over, as asked
    ],
    ids=["default", "five", "none", "overwrite"],
)
def test_retries_resume_the_failed_attempt(
    virtual_cluster, submit_args, capsys, extra, attempts, resume
):
    assert cli.main(submit_args(*extra, "--dry-run")) == 0
    request = json.loads(capsys.readouterr().out)
    emr_spec.validate("StartJobRun", request)
    policy = request.get("retryPolicyConfiguration")
    assert (policy or {}).get("maxAttempts") == attempts
    arguments = request["jobDriver"]["sparkSubmitJobDriver"]["entryPointArguments"]
    assert ("--resume" in arguments) == resume


def test_retries_reach_a_job_template_run(virtual_cluster, submit_args, capsys):
    assert cli.main(submit_args("--job-template-id", "tmpl0123", "--dry-run")) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["retryPolicyConfiguration"] == {"maxAttempts": 3}
    assert cli.main(submit_args("--max-attempts", "0", "--dry-run")) == 2
    assert "--max-attempts must be >= 1" in _one_error_line(capsys)


# ---- status, logs, cancel of a job run ------------------------------------------------


def _started(submit_args, capsys) -> str:
    assert cli.main(submit_args()) == 0
    return capsys.readouterr().out.strip()


def test_status_logs_and_cancel_follow_a_job_run(clients, virtual_cluster, submit_args, capsys):
    import gzip

    s3, emr = clients
    job_id = _started(submit_args, capsys)
    run = ["--virtual-cluster-id", virtual_cluster]
    assert cli.main(["status", job_id, *run]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{job_id}\tRUNNING\tname=featurizer-fruits-train"), line

    # EMR uploads the driver's streams under the run's logUri (s3MonitoringConfiguration).
    base = (
        f"_featurizer/emr/logs/{virtual_cluster}/jobs/{job_id}/containers/"
        f"spark-{job_id}/spark-{job_id}-driver"
    )
    s3.put_object(
        Bucket="results",
        Key=f"{base}/stderr.gz",
        Body=gzip.compress(b"starting\nfeaturizer: found 2 images\n"),
    )
    s3.put_object(
        Bucket="results", Key=f"{base}/stdout.gz", Body=gzip.compress(b"featurizer run complete\n")
    )
    assert cli.main(["logs", job_id, *run]) == 0
    out = capsys.readouterr().out
    assert f"==> driver stderr (s3://results/{base}/stderr.gz) <==" in out
    assert "featurizer: found 2 images" in out and "featurizer run complete" in out
    assert cli.main(["logs", job_id, *run, "--tail", "1"]) == 0
    tail = capsys.readouterr().out
    assert "featurizer: found 2 images" in tail and "starting" not in tail

    assert cli.main(["cancel", job_id, *run]) == 0
    assert f"cancel requested for job run {job_id}" in capsys.readouterr().out
    assert _describe(emr, virtual_cluster, job_id)["state"] == "CANCELLED"
    assert cli.main(["status", job_id, *run]) == 1
    assert f"job run {job_id} ended CANCELLED" in _one_error_line(capsys)
    assert cli.main(["cancel", job_id, *run]) == 0  # idempotent
    assert "already ended CANCELLED" in capsys.readouterr().out


def test_logs_before_emr_uploaded_any_say_so(clients, virtual_cluster, submit_args, capsys):
    job_id = _started(submit_args, capsys)
    assert cli.main(["logs", job_id, "--virtual-cluster-id", virtual_cluster]) == 1
    line = _one_error_line(capsys)
    assert f"no driver log of job run {job_id} under s3://results/_featurizer/emr/logs" in line


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["delete", "0000000000000000000", "--virtual-cluster-id", "vc"], "featurizer cancel RUN"),
        (["status", "--virtual-cluster-id", "vc"], "name the EMR job run"),
    ],
    ids=["delete-is-for-kubernetes", "job-run-id-required"],
)
def test_job_run_commands_refuse_what_they_cannot_do(aws, command, message, capsys):
    assert cli.main(command) == 2
    assert message in _one_error_line(capsys)
