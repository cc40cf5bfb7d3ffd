"""EMR on EKS requests for the featurizer job: pure data, no AWS calls.

`start_job_run_request` builds the StartJobRun parameters; its `entryPointArguments` are
`RunConfig.to_argv()`, the single definition of the job's options. The files under
`emr-on-eks/` (request template, job template, pod templates) are rendered from the same
functions by `render_files` and kept identical by a test. Every request is checked against
botocore's service model for `emr-containers` by `validate` (types, required members,
lengths and the model's regular expressions) before it is printed or sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurizer.config import RunConfig
from featurizer.errors import ConfigError
from featurizer.launch import DRIVER_CONTAINER, EXECUTOR_CONTAINER

SERVICE = "emr-containers"
RELEASE_LABEL = "emr-7.13.0-latest"  # Spark 3.5.6-amzn-2, Python 3.9 and 3.11, Java 17
# Baked by docker/emr-on-eks.Dockerfile; outside every path EMR mounts over.
ENTRY_POINT = "local:///opt/featurizer/main.py"
PYTHON = "/opt/featurizer/venv/bin/python"  # a venv on the release's python3.11
LOG_GROUP = "/emr-on-eks/featurizer"
LOG_STREAM_PREFIX = "featurizer"
TAGS = {"app": "featurizer"}
TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED")
# Attempts EMR gives a failed driver (retryPolicyConfiguration); every attempt after the first
# runs with --resume and continues what the failed one staged. The chart's default is the
# same: 1 run + 2 retries.
MAX_ATTEMPTS = 3
ROLE_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
NAME_CHARS = re.compile(r"[^.\-_/#A-Za-z0-9]+")


@dataclass(frozen=True)
class Resources:
    """Driver and executor sizing (strings, so job templates can hold `${Parameters}`)."""

    executors: str = "2"
    executor_cores: str = "2"
    executor_memory: str = "4g"
    driver_cores: str = "1"
    driver_memory: str = "4g"

    def spark_submit_parameters(self) -> str:
        conf = {
            "spark.executor.instances": self.executors,
            "spark.executor.cores": self.executor_cores,
            "spark.executor.memory": self.executor_memory,
            "spark.driver.cores": self.driver_cores,
            "spark.driver.memory": self.driver_memory,
        }
        return " ".join(f"--conf {key}={value}" for key, value in conf.items())


@dataclass(frozen=True)
class Target:
    """Where the job runs and what it needs besides its own arguments."""

    virtual_cluster_id: str
    execution_role_arn: str
    image: str
    log_uri: str  # s3:// prefix for driver/executor logs
    driver_pod_template: str  # s3:// URIs of the uploaded pod templates
    executor_pod_template: str
    release_label: str = RELEASE_LABEL
    log_group: str | None = LOG_GROUP  # None: no CloudWatch Logs
    resources: Resources = Resources()


# ---- pod templates -----------------------------------------------------------------
def pod_template(role: str) -> dict[str, Any]:
    """The driver or executor pod template. The image holds x86_64 wheels only, so the
    pods must land on amd64 nodes (a Graviton node would fail with `exec format error`)."""
    container = DRIVER_CONTAINER if role == "driver" else EXECUTOR_CONTAINER
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "labels": {"app.kubernetes.io/name": "featurizer", "app.kubernetes.io/component": role}
        },
        "spec": {
            "nodeSelector": {"kubernetes.io/arch": "amd64"},
            "containers": [
                {"name": container, "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}]}
            ],
        },
    }


def pod_template_yaml(role: str) -> str:
    import yaml

    header = (
        f"# Spark {role} pod template for EMR on EKS (featurizer). Generated from\n"
        "# job/featurizer/launch/emr_spec.py by `make emr-render`; to customize (node\n"
        f"# groups, tolerations), copy it and pass --{role}-pod-template FILE.\n"
    )
    return header + yaml.safe_dump(pod_template(role), sort_keys=False)


# ---- StartJobRun -------------------------------------------------------------------
def spark_defaults(
    image: str, driver_pod_template: str, executor_pod_template: str
) -> dict[str, str]:
    return {
        "spark.kubernetes.container.image": image,
        "spark.kubernetes.driver.podTemplateFile": driver_pod_template,
        "spark.kubernetes.executor.podTemplateFile": executor_pod_template,
        # The release's default python3 is 3.9; the job's pins need the image's 3.11 venv.
        "spark.pyspark.python": PYTHON,
        "spark.pyspark.driver.python": PYTHON,
        "spark.dynamicAllocation.enabled": "false",
    }


def monitoring(log_uri: str, log_group: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "persistentAppUI": "ENABLED",
        "s3MonitoringConfiguration": {"logUri": log_uri},
    }
    if log_group:
        config["cloudWatchMonitoringConfiguration"] = {
            "logGroupName": log_group,
            "logStreamNamePrefix": LOG_STREAM_PREFIX,
        }
    return config


def job_name(config: RunConfig) -> str:
    """featurizer-<last segment of the output>, within the API's name rules."""
    last = config.output.rstrip("/").rsplit("/", 1)[-1]
    return ("featurizer-" + NAME_CHARS.sub("-", last)).strip("-")[:64]


def with_retries(config: RunConfig, max_attempts: int) -> RunConfig:
    """The job options for a run EMR may retry: --resume, so that a retry continues the failed
    attempt's staged work instead of refusing its partial output (unless --overwrite)."""
    if max_attempts > 1 and not config.overwrite:
        return dataclasses.replace(config, resume=True)
    return config


def retry_policy(max_attempts: int) -> dict[str, Any]:
    return {"retryPolicyConfiguration": {"maxAttempts": max_attempts}} if max_attempts > 1 else {}


def start_job_run_request(
    config: RunConfig,
    target: Target,
    name: str | None = None,
    client_token: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> dict[str, Any]:
    """StartJobRun parameters; the client token defaults to a hash of the request, so
    re-sending the same request returns the same job run instead of starting another.
    With `max_attempts` > 1 EMR retries a failed driver and the job resumes."""
    config = with_retries(config, max_attempts)
    request: dict[str, Any] = {
        "name": name or job_name(config),
        "virtualClusterId": target.virtual_cluster_id,
        "executionRoleArn": target.execution_role_arn,
        "releaseLabel": target.release_label,
        "jobDriver": {
            "sparkSubmitJobDriver": {
                "entryPoint": ENTRY_POINT,
                "entryPointArguments": config.to_argv(),
                "sparkSubmitParameters": target.resources.spark_submit_parameters(),
            }
        },
        "configurationOverrides": {
            "applicationConfiguration": [
                {
                    "classification": "spark-defaults",
                    "properties": spark_defaults(
                        target.image, target.driver_pod_template, target.executor_pod_template
                    ),
                }
            ],
            "monitoringConfiguration": monitoring(target.log_uri, target.log_group),
        },
        **retry_policy(max_attempts),
        "tags": dict(TAGS),
    }
    request["clientToken"] = client_token or token_of(request)
    return request


def token_of(request: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        {k: v for k, v in request.items() if k != "clientToken"},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()  # 64 chars, the API's maximum


def driver_log_uris(log_uri: str, virtual_cluster_id: str, job_id: str) -> dict[str, str]:
    """Where EMR on EKS uploads the driver's stdout and stderr (s3MonitoringConfiguration)."""
    base = (
        f"{log_uri.rstrip('/')}/{virtual_cluster_id}/jobs/{job_id}/containers/"
        f"spark-{job_id}/spark-{job_id}-driver"
    )
    return {"stdout": f"{base}/stdout.gz", "stderr": f"{base}/stderr.gz"}


# ---- job template ------------------------------------------------------------------
def _default(option: str) -> Any:
    return RunConfig.__dataclass_fields__[option].default


# name -> (type, default); no default = required when starting a run from the template.
TEMPLATE_PARAMETERS: dict[str, tuple[str, str | None]] = {
    "Input": ("STRING", None),
    "Output": ("STRING", None),
    "Image": ("STRING", None),
    "LogUri": ("STRING", None),
    "DriverPodTemplate": ("STRING", None),
    "ExecutorPodTemplate": ("STRING", None),
    "ReleaseLabel": ("STRING", RELEASE_LABEL),
    "PcaOption": ("STRING", "--pca-variance"),  # or --pca-k
    "PcaValue": ("STRING", str(_default("pca_variance"))),
    "Executors": ("NUMBER", Resources.executors),
    "ExecutorCores": ("NUMBER", Resources.executor_cores),
    "ExecutorMemory": ("STRING", Resources.executor_memory),
    "DriverCores": ("NUMBER", Resources.driver_cores),
    "DriverMemory": ("STRING", Resources.driver_memory),
}
PCA_OPTIONS = ("--pca-variance", "--pca-k")


def _param(name: str) -> str:
    return "${" + name + "}"


def job_template_data(execution_role_arn: str, log_group: str | None = LOG_GROUP) -> dict:
    """jobTemplateData: the StartJobRun request above with `${Parameters}` in its fields.
    Its runs always --resume: a retry continues a failed attempt, and on an empty output
    --resume is an ordinary run."""
    placeholders = RunConfig(input=_param("Input"), output=_param("Output"), resume=True)
    sizing = Resources(
        executors=_param("Executors"),
        executor_cores=_param("ExecutorCores"),
        executor_memory=_param("ExecutorMemory"),
        driver_cores=_param("DriverCores"),
        driver_memory=_param("DriverMemory"),
    )
    return {
        "executionRoleArn": execution_role_arn,
        "releaseLabel": _param("ReleaseLabel"),
        "jobDriver": {
            "sparkSubmitJobDriver": {
                "entryPoint": ENTRY_POINT,
                "entryPointArguments": placeholders.to_argv()
                + [_param("PcaOption"), _param("PcaValue")],
                "sparkSubmitParameters": sizing.spark_submit_parameters(),
            }
        },
        "configurationOverrides": {
            "applicationConfiguration": [
                {
                    "classification": "spark-defaults",
                    "properties": spark_defaults(
                        _param("Image"), _param("DriverPodTemplate"), _param("ExecutorPodTemplate")
                    ),
                }
            ],
            "monitoringConfiguration": monitoring(_param("LogUri"), log_group),
        },
        "parameterConfiguration": {
            name: {"type": kind, **({"defaultValue": default} if default else {})}
            for name, (kind, default) in TEMPLATE_PARAMETERS.items()
        },
        "jobTags": dict(TAGS),
    }


def template_parameters(
    config: RunConfig,
    image: str,
    log_uri: str,
    driver_pod_template: str,
    executor_pod_template: str,
    resources: Resources,
    release_label: str,
) -> dict[str, str]:
    """jobTemplateParameters for a run; refuses job options the template cannot carry."""
    carried = dataclasses.replace(
        config,
        input="i",
        output="o",
        pca_k=None,
        resume=False,
        pca_variance=_default("pca_variance"),
    )
    extra = [arg for arg in carried.to_argv()[4:] if arg.startswith("--")]
    if extra:
        raise ConfigError(
            f"{', '.join(extra)} cannot be passed through the job template "
            f"(it carries --input, --output and the PCA option): submit "
            f"without --job-template-id"
        )
    pca = (
        ("--pca-k", str(config.pca_k))
        if config.pca_k
        else ("--pca-variance", str(config.pca_variance))
    )
    return {
        "Input": config.input,
        "Output": config.output,
        "Image": image,
        "LogUri": log_uri,
        "DriverPodTemplate": driver_pod_template,
        "ExecutorPodTemplate": executor_pod_template,
        "ReleaseLabel": release_label,
        "PcaOption": pca[0],
        "PcaValue": pca[1],
        "Executors": resources.executors,
        "ExecutorCores": resources.executor_cores,
        "ExecutorMemory": resources.executor_memory,
        "DriverCores": resources.driver_cores,
        "DriverMemory": resources.driver_memory,
    }


def substitute(value: Any, parameters: Mapping[str, str]) -> Any:
    """Replace `${Name}` the way EMR fills a job template (used to check the template)."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: parameters.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [substitute(item, parameters) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, parameters) for key, item in value.items()}
    return value


def template_run_request(
    job_template_id: str,
    virtual_cluster_id: str,
    name: str,
    parameters: Mapping[str, str],
    client_token: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "name": name,
        "virtualClusterId": virtual_cluster_id,
        "jobTemplateId": job_template_id,
        "jobTemplateParameters": dict(parameters),
        **retry_policy(max_attempts),
        "tags": dict(TAGS),
    }
    request["clientToken"] = client_token or token_of(request)
    return request


# ---- validation against botocore's model ------------------------------------------
def validate(operation: str, params: Mapping[str, Any]) -> None:
    """Raise ConfigError unless botocore's `emr-containers` model accepts `params`:
    botocore's own ParamValidator (types, required members, minimum lengths) plus the
    model's maximum lengths, `pattern`s and `enum`s, which botocore leaves to the service."""
    import botocore.session
    from botocore.validate import ParamValidator

    shape = (
        botocore.session.get_session()
        .get_service_model(SERVICE)
        .operation_model(operation)
        .input_shape
    )
    report = ParamValidator().validate(dict(params), shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += _constraint_errors(params, shape, operation)
    if problems:
        raise ConfigError(
            f"{operation} request rejected by the {SERVICE} model: "
            + "; ".join(p.replace("\n", " ") for p in problems)
        )


def _constraint_errors(value: Any, shape: Any, path: str) -> list[str]:
    kind, limit = shape.type_name, shape.metadata.get("max")
    if limit is not None and isinstance(value, (str, list, Mapping)) and len(value) > limit:
        return [f"{path} is longer than the maximum of {limit}"]
    if kind == "structure" and isinstance(value, Mapping):
        return [
            err
            for key, item in value.items()
            if key in shape.members
            for err in _constraint_errors(item, shape.members[key], f"{path}.{key}")
        ]
    if kind == "list" and isinstance(value, list):
        return [
            err
            for i, item in enumerate(value)
            for err in _constraint_errors(item, shape.member, f"{path}[{i}]")
        ]
    if kind == "map" and isinstance(value, Mapping):
        return [
            err
            for key, item in value.items()
            for err in (
                _constraint_errors(key, shape.key, f"{path} key {key!r}")
                + _constraint_errors(item, shape.value, f"{path}.{key}")
            )
        ]
    if kind == "string" and isinstance(value, str):
        pattern, enum = shape.metadata.get("pattern"), shape.metadata.get("enum")
        if pattern and not re.fullmatch(pattern, value, flags=re.DOTALL):
            return [f"{path}={value!r} does not match {pattern}"]
        if enum and value not in enum:
            return [f"{path}={value!r} is not one of {', '.join(enum)}"]
    return []


# ---- files under emr-on-eks/ -------------------------------------------------------
# Shell placeholders, filled with `envsubst` (see emr-on-eks/README.md); EMR's own
# job template parameters are ${CamelCase} and are left alone by the documented call.
SHELL_PLACEHOLDERS = (
    "VIRTUAL_CLUSTER_ID",
    "EXECUTION_ROLE_ARN",
    "IMAGE",
    "INPUT_URI",
    "OUTPUT_URI",
    "LOG_URI",
    "STAGING_URI",
)


def example_target(values: Mapping[str, str]) -> Target:
    return Target(
        virtual_cluster_id=values["VIRTUAL_CLUSTER_ID"],
        execution_role_arn=values["EXECUTION_ROLE_ARN"],
        image=values["IMAGE"],
        log_uri=values["LOG_URI"],
        driver_pod_template=values["STAGING_URI"] + "/pod-templates/driver.yaml",
        executor_pod_template=values["STAGING_URI"] + "/pod-templates/executor.yaml",
    )


def rendered_files() -> dict[str, str]:
    """Relative path under emr-on-eks/ -> content."""
    shell = {name: "${" + name + "}" for name in SHELL_PLACEHOLDERS}
    config = RunConfig(input=shell["INPUT_URI"], output=shell["OUTPUT_URI"])
    request = start_job_run_request(config, example_target(shell), name="featurizer")
    del request["clientToken"]  # the AWS CLI generates one per call
    template = {
        "name": "featurizer",
        "jobTemplateData": job_template_data(shell["EXECUTION_ROLE_ARN"]),
        "tags": dict(TAGS),
    }
    dump = lambda doc: json.dumps(doc, indent=2) + "\n"  # noqa: E731
    return {
        "start-job-run.json": dump(request),
        "create-job-template.json": dump(template),
        "pod-templates/driver.yaml": pod_template_yaml("driver"),
        "pod-templates/executor.yaml": pod_template_yaml("executor"),
    }


def render_files(folder: Path) -> list[Path]:
    written = []
    for relative, content in rendered_files().items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
