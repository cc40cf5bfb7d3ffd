"""The EMR on EKS requests and files: valid for botocore's model, built from RunConfig, and
the checked-in emr-on-eks/ files identical to what the code renders."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from featurizer.config import RunConfig
from featurizer.errors import ConfigError
from featurizer.launch import emr_spec as spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = {
    "VIRTUAL_CLUSTER_ID": "abcdef0123456789abcdef012",
    "EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/featurizer-emr-job",
    "IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/featurizer-emr:0.1.0",
    "INPUT_URI": "s3://data/fruits-360/Training",
    "OUTPUT_URI": "s3://results/fruits-train",
    "LOG_URI": "s3://results/_featurizer/emr/logs",
    "STAGING_URI": "s3://results/_featurizer/emr",
}


def _config(**options) -> RunConfig:
    return RunConfig(input=EXAMPLE["INPUT_URI"], output=EXAMPLE["OUTPUT_URI"], **options)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, ["--resume"]),  # retried by default: the retry resumes
        (
            {
                "pca_k": 16,
                "limit": 500,
                "overwrite": True,
                "conf": ("spark.sql.shuffle.partitions=8",),
            },
            [
                "--pca-k",
                "16",
                "--limit",
                "500",
                "--overwrite",
                "--conf",
                "spark.sql.shuffle.partitions=8",
            ],
        ),
    ],
    ids=["defaults", "options"],
)
def test_request_carries_the_job_options_and_passes_the_model(options, expected):
    config = _config(**options)
    request = spec.start_job_run_request(config, spec.example_target(EXAMPLE))
    spec.validate("StartJobRun", request)
    arguments = request["jobDriver"]["sparkSubmitJobDriver"]["entryPointArguments"]
    assert arguments == [
        "--input",
        EXAMPLE["INPUT_URI"],
        "--output",
        EXAMPLE["OUTPUT_URI"],
        *expected,
    ]
    assert RunConfig.from_argv(arguments) == dataclasses.replace(
        config, resume=not config.overwrite
    )
    assert request["retryPolicyConfiguration"] == {"maxAttempts": spec.MAX_ATTEMPTS}
    assert len(request["clientToken"]) == 64


def test_client_token_is_a_function_of_the_request():
    target = spec.example_target(EXAMPLE)
    first = spec.start_job_run_request(_config(), target)
    assert spec.start_job_run_request(_config(), target)["clientToken"] == first["clientToken"]
    assert (
        spec.start_job_run_request(_config(pca_k=8), target)["clientToken"] != first["clientToken"]
    )
    other_image = dataclasses.replace(target, image=target.image + "-2")
    assert spec.start_job_run_request(_config(), other_image)["clientToken"] != first["clientToken"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("virtualClusterId", "Not-A-Cluster!", "does not match"),
        ("releaseLabel", "", "Invalid length"),
        ("clientToken", "x" * 65, "longer than the maximum of 64"),
        ("executionRoleArn", "arn:aws:iam::123456789012:user/me", "does not match"),
    ],
)
def test_validate_rejects_what_the_service_would(field, value, message):
    request = spec.start_job_run_request(_config(), spec.example_target(EXAMPLE))
    request[field] = value
    with pytest.raises(ConfigError, match=message):
        spec.validate("StartJobRun", request)


def test_validate_checks_nested_enums_and_required_members():
    request = spec.start_job_run_request(_config(), spec.example_target(EXAMPLE))
    request["configurationOverrides"]["monitoringConfiguration"]["persistentAppUI"] = "ON"
    with pytest.raises(ConfigError, match="persistentAppUI='ON' is not one of ENABLED"):
        spec.validate("StartJobRun", request)
    del request["virtualClusterId"]
    with pytest.raises(ConfigError, match="Missing required parameter"):
        spec.validate("StartJobRun", request)


def test_checked_in_files_are_the_rendered_ones():
    for relative, content in spec.rendered_files().items():
        path = ROOT / "emr-on-eks" / relative
        assert path.read_text() == content, f"{path} is stale: run make emr-render"


def test_start_job_run_file_is_the_submitters_request():
    """emr-on-eks/start-job-run.json, filled like the README does with envsubst, is exactly
    what `featurizer submit emr` sends for the same values (less the client token)."""
    text = (ROOT / "emr-on-eks" / "start-job-run.json").read_text()
    filled = json.loads(spec.substitute(text, EXAMPLE))
    expected = spec.start_job_run_request(
        _config(), spec.example_target(EXAMPLE), name="featurizer"
    )
    assert filled == {k: v for k, v in expected.items() if k != "clientToken"}
    spec.validate("StartJobRun", {**filled, "clientToken": "t"})


def test_job_template_passes_the_model_and_fills_into_valid_job_arguments():
    document = json.loads((ROOT / "emr-on-eks" / "create-job-template.json").read_text())
    document = spec.substitute(document, EXAMPLE)  # the README's envsubst step
    spec.validate("CreateJobTemplate", {**document, "clientToken": "t"})

    data = document["jobTemplateData"]
    defaults = {
        name: c["defaultValue"]
        for name, c in data["parameterConfiguration"].items()
        if "defaultValue" in c
    }
    for config in (_config(), _config(pca_k=32)):
        params = spec.template_parameters(
            config,
            EXAMPLE["IMAGE"],
            EXAMPLE["LOG_URI"],
            "s3://s/d.yaml",
            "s3://s/e.yaml",
            spec.Resources(executors="4"),
            spec.RELEASE_LABEL,
        )
        assert set(params) == set(data["parameterConfiguration"])
        request = spec.template_run_request(
            "tmpl0123", EXAMPLE["VIRTUAL_CLUSTER_ID"], "featurizer", params
        )
        spec.validate("StartJobRun", request)
        run = spec.substitute(data, {**defaults, **params})
        assert "${" not in json.dumps(run)
        arguments = run["jobDriver"]["sparkSubmitJobDriver"]["entryPointArguments"]
        assert RunConfig.from_argv(arguments) == dataclasses.replace(config, resume=True)
        assert (
            "spark.executor.instances=4"
            in run["jobDriver"]["sparkSubmitJobDriver"]["sparkSubmitParameters"]
        )
        assert (
            run["configurationOverrides"]["applicationConfiguration"][0]["properties"][
                "spark.kubernetes.container.image"
            ]
            == EXAMPLE["IMAGE"]
        )


def test_job_template_refuses_options_it_cannot_carry():
    with pytest.raises(ConfigError, match="--limit cannot be passed through the job template"):
        spec.template_parameters(
            _config(limit=10),
            "i",
            "s3://l",
            "s3://d",
            "s3://e",
            spec.Resources(),
            spec.RELEASE_LABEL,
        )


def test_pod_templates_are_valid_kubernetes_pods():
    folder = ROOT / "emr-on-eks" / "pod-templates"
    result = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh"), "validate", "-strict", "-summary", str(folder)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid: 2, Invalid: 0, Errors: 0" in result.stdout


def test_iam_policy_grants_exactly_what_the_run_touches():
    """The least-privilege S3 policy, filled for EXAMPLE, allows the job's reads and writes
    (input, output, pod templates, logs) and nothing outside those prefixes."""
    text = (ROOT / "emr-on-eks" / "iam" / "job-execution-s3-policy.json").read_text()
    policy = json.loads(
        spec.substitute(
            text,
            {
                "INPUT_BUCKET": "data",
                "INPUT_PREFIX": "fruits-360/Training",
                "OUTPUT_BUCKET": "results",
                "OUTPUT_PREFIX": "fruits-train",
                "STAGING_BUCKET": "results",
                "STAGING_PREFIX": "_featurizer/emr",
                "AWS_REGION": "eu-west-1",
                "AWS_ACCOUNT_ID": "123456789012",
                "LOG_GROUP": spec.LOG_GROUP,
            },
        )
    )
    allowed = lambda action, arn, prefix=None: _allows(policy, action, arn, prefix)  # noqa
    assert allowed("s3:GetObject", "arn:aws:s3:::data/fruits-360/Training/Kiwi/1.jpg")
    assert allowed("s3:ListBucket", "arn:aws:s3:::data", "fruits-360/Training/")
    assert not allowed("s3:PutObject", "arn:aws:s3:::data/fruits-360/Training/x")
    assert not allowed("s3:GetObject", "arn:aws:s3:::data/other/x.jpg")
    for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"):
        assert allowed(action, "arn:aws:s3:::results/fruits-train/features/part-0.parquet")
    assert allowed("s3:ListBucket", "arn:aws:s3:::results", "fruits-train/_work/")
    assert not allowed("s3:PutObject", "arn:aws:s3:::results/fruits-train2/x")
    assert allowed("s3:GetObject", "arn:aws:s3:::results/_featurizer/emr/pod-templates/a/d.yaml")
    assert allowed("s3:PutObject", "arn:aws:s3:::results/_featurizer/emr/logs/vc/jobs/j/x.gz")
    assert not allowed("s3:PutObject", "arn:aws:s3:::results/_featurizer/emr/pod-templates/x")
    assert allowed(
        "logs:PutLogEvents",
        "arn:aws:logs:eu-west-1:123456789012:log-group:"
        f"{spec.LOG_GROUP}:log-stream:featurizer/vc/jobs/j/containers/x/stderr",
    )
    trust = json.loads(
        (ROOT / "emr-on-eks" / "iam" / "job-execution-trust-policy.json").read_text()
    )
    (statement,) = trust["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert "emr-containers-sa-*-*-${AWS_ACCOUNT_ID}-${BASE36_ROLE_NAME}" in json.dumps(statement)


def _allows(policy: dict, action: str, arn: str, prefix: str | None) -> bool:
    from fnmatch import fnmatchcase

    def matches(patterns, value):
        patterns = [patterns] if isinstance(patterns, str) else patterns
        return any(fnmatchcase(value, pattern) for pattern in patterns)

    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or not matches(statement["Action"], action):
            continue
        if not matches(statement["Resource"], arn):
            continue
        allowed_prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if prefix is None or allowed_prefixes is None or matches(allowed_prefixes, prefix):
            return True
    return False
