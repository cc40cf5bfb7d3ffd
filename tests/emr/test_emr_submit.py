"""`featurizer submit emr` against moto's standalone server on 127.0.0.1 (S3 + emr-containers).

In-process calls go through `cli.main`; Ctrl-C behaviour is tested on real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from featurizer import cli
from featurizer.config import RunConfig
from featurizer.launch import emr_spec



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


def test_submit_uploads_pod_templates_and_starts_the_job(clients, virtual_cluster, buckets,
                                                         submit_args, capsys):
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
    expected = RunConfig(input=buckets["input"], output=buckets["output"], pca_k=16)
    assert RunConfig.from_argv(driver["entryPointArguments"]) == expected
    assert driver["entryPointArguments"] == expected.to_argv()

    # The pod templates the request names are in S3, byte-identical to the built-in ones.
    listing = s3.list_objects_v2(Bucket="results", Prefix="_featurizer/emr/pod-templates/")
    keys = sorted(item["Key"] for item in listing["Contents"])
    assert [key.rsplit("/", 1)[1] for key in keys] == ["driver.yaml", "executor.yaml"]
    for key in keys:
        role = key.rsplit("/", 1)[1].removesuffix(".yaml")
        body = s3.get_object(Bucket="results", Key=key)["Body"].read().decode()
        assert body == emr_spec.pod_template_yaml(role)


def test_identical_retry_reuses_the_client_token(clients, virtual_cluster, submit_args, capsys):
    _, emr = clients
    assert cli.main(submit_args()) == 0
    first = capsys.readouterr()
    assert cli.main(submit_args()) == 0                 # e.g. after a lost response
    second = capsys.readouterr()
    assert cli.main(submit_args("--pca-k", "8")) == 0   # a different job
    third = capsys.readouterr()

    tokens = [_describe(emr, virtual_cluster, out.out.strip())["clientToken"]
              for out in (first, second, third)]
    assert tokens[0] == tokens[1] != tokens[2]
    assert f"client token {tokens[0]}" in first.err
    # EMR answers a repeated token with the original job run; moto records both calls,
    # which is what shows that the second call really sent the same token.
    assert len(_jobs(emr, virtual_cluster)) == 3


def test_dry_run_prints_a_valid_request_and_calls_nothing(clients, virtual_cluster,
                                                          submit_args, capsys, monkeypatch):
    s3, emr = clients
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")   # nothing listens there
    assert cli.main(submit_args("--dry-run")) == 0
    out = capsys.readouterr()
    request = json.loads(out.out)
    emr_spec.validate("StartJobRun", request)
    assert "nothing was called" in out.err
    monkeypatch.undo()
    assert _jobs(emr, virtual_cluster) == []
    assert "Contents" not in s3.list_objects_v2(Bucket="results")


def _start_waiting(featurizer_bin, submit_args, aws, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [featurizer_bin, *submit_args("--wait", "--poll-seconds", "0.2", *extra)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **aws})


def _wait_for_running(process: subprocess.Popen, emr, virtual_cluster: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = _jobs(emr, virtual_cluster)
        if jobs and process.poll() is None:
            time.sleep(1)   # let the waiter see RUNNING at least once
            return jobs[0]["id"]
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.kill()
    pytest.fail("the job run never started")


def test_wait_follows_the_run_to_a_terminal_state(featurizer_bin, aws, clients,
                                                  virtual_cluster, submit_args):
    _, emr = clients
    process = _start_waiting(featurizer_bin, submit_args, aws)
    job_id = _wait_for_running(process, emr, virtual_cluster)
    emr.cancel_job_run(id=job_id, virtualClusterId=virtual_cluster)   # e.g. an operator
    out, err = process.communicate(timeout=60)

    assert process.returncode == 1
    assert out.strip() == job_id
    states = [line.split(": ", 2)[-1] for line in err.splitlines() if f"job run {job_id}:" in line]
    assert states[0] == "RUNNING" and states[-1].startswith("CANCELLED")
    assert f"spark-{job_id}-driver/(stdout.gz|stderr.gz)" in err            # log locations
    assert f"/{virtual_cluster}/jobs/{job_id}/" in err
    assert err.strip().splitlines()[-1].startswith(f"featurizer: error: job run {job_id} "
                                                   "ended CANCELLED")


@pytest.mark.parametrize("how", ["flag", "answer"])
def test_ctrl_c_cancels_the_run(featurizer_bin, aws, clients, virtual_cluster, submit_args,
                                how):
    _, emr = clients
    extra = ("--cancel-on-interrupt",) if how == "flag" else ()
    process = _start_waiting(featurizer_bin, submit_args, aws, *extra)
    job_id = _wait_for_running(process, emr, virtual_cluster)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate("y\n" if how == "answer" else "", timeout=60)

    assert _describe(emr, virtual_cluster, job_id)["state"] == "CANCELLED"
    assert f"cancel requested for job run {job_id}" in err
    assert ("cancel job run" in err) == (how == "answer")   # asked only without the flag
    assert process.returncode == 1


def test_ctrl_c_without_consent_leaves_the_run_alone(featurizer_bin, aws, clients,
                                                     virtual_cluster, submit_args):
    _, emr = clients
    process = _start_waiting(featurizer_bin, submit_args, aws)
    job_id = _wait_for_running(process, emr, virtual_cluster)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate("n\n", timeout=60)

    assert process.returncode == 1
    assert _describe(emr, virtual_cluster, job_id)["state"] == "RUNNING"
    assert (f"aws emr-containers cancel-job-run --id {job_id} --virtual-cluster-id "
            f"{virtual_cluster}") in err.splitlines()[-1]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_staging_bucket(clients, virtual_cluster, submit_args, capsys):
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


def test_unknown_virtual_cluster(clients, submit_args, capsys):
    code = cli.main(_with(submit_args(), virtual_cluster_id="doesnotexist0123456789"))
    assert code == 2
    line = _one_error_line(capsys)
    assert "virtual cluster doesnotexist0123456789 not found in us-east-1" in line
    assert "list-virtual-clusters" in line


def test_empty_input_prefix(clients, virtual_cluster, submit_args, capsys):
    code = cli.main(_with(submit_args(), input="s3://data/nothing-here"))
    assert code == 2
    assert "--input s3://data/nothing-here holds no objects" in _one_error_line(capsys)


def test_local_paths_are_refused(virtual_cluster, submit_args, capsys, tmp_path):
    code = cli.main(_with(submit_args(), input=str(tmp_path)))
    assert code == 2
    assert "--input must be an S3 URI" in _one_error_line(capsys)


def test_job_template_run_dry_run(virtual_cluster, submit_args, capsys):
    args = submit_args("--job-template-id", "tmpl0123", "--pca-k", "12", "--dry-run")
    assert cli.main(args) == 0
    request = json.loads(capsys.readouterr().out)
    emr_spec.validate("StartJobRun", request)
    assert request["jobTemplateId"] == "tmpl0123"
    assert "jobDriver" not in request and "executionRoleArn" not in request
    params = request["jobTemplateParameters"]
    assert (params["PcaOption"], params["PcaValue"]) == ("--pca-k", "12")
    assert params["Input"] == args[args.index("--input") + 1]

    assert cli.main(submit_args("--job-template-id", "tmpl0123", "--limit", "5",
                                "--dry-run")) == 2
    assert "--limit cannot be passed through the job template" in _one_error_line(capsys)
