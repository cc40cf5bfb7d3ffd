"""`featurizer submit emr`: run the job on an Amazon EMR on EKS virtual cluster.

The job runs the image built from docker/emr-on-eks.Dockerfile (job and weights baked in),
with the options of `featurizer run` as its arguments. Before anything is sent, the
request is validated against botocore's model; then the pod templates are uploaded to the
staging prefix (content-addressed, so a running job's templates are never overwritten),
StartJobRun is called with a client token derived from the request (re-running the same
command returns the same job run), and `--wait` follows the run to its end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from featurizer import storage
from featurizer.config import RunConfig
from featurizer.errors import ConfigError, FeaturizerError
from featurizer.launch import emr_spec as spec
from featurizer.launch import submit_targets


class JobRunFailed(FeaturizerError):
    """The job run ended FAILED or CANCELLED."""


def register(commands: argparse._SubParsersAction) -> None:
    parser = submit_targets(commands).add_parser(
        "emr",
        help="start the job on an EMR on EKS virtual cluster",
        description="Start the featurizer job on an Amazon EMR on EKS virtual cluster. "
        "Input and output must be on S3. See emr-on-eks/README.md for the "
        "AWS-side prerequisites.",
    )
    aws = parser.add_argument_group("EMR on EKS")
    aws.add_argument(
        "--virtual-cluster-id",
        required=True,
        metavar="ID",
        help="the EMR on EKS virtual cluster to run on (aws emr-containers list-virtual-clusters)",
    )
    aws.add_argument(
        "--execution-role-arn",
        metavar="ARN",
        help="job execution role (required unless --job-template-id)",
    )
    aws.add_argument(
        "--image",
        required=True,
        metavar="URI",
        help="the image built from docker/emr-on-eks.Dockerfile (ECR URI)",
    )
    aws.add_argument(
        "--release-label",
        default=spec.RELEASE_LABEL,
        metavar="LABEL",
        help=f"EMR release; must match the image's base (default {spec.RELEASE_LABEL})",
    )
    aws.add_argument("--region", help="AWS region (default: AWS_REGION / your profile)")
    aws.add_argument("--name", help="job run name (default featurizer-<output folder>)")
    aws.add_argument(
        "--staging-uri",
        metavar="S3_URI",
        help="where pod templates are uploaded (default s3://<output bucket>/_featurizer/emr)",
    )
    aws.add_argument(
        "--log-uri",
        metavar="S3_URI",
        help="S3 prefix for driver/executor logs (default <staging>/logs)",
    )
    aws.add_argument(
        "--log-group",
        default=spec.LOG_GROUP,
        help="CloudWatch Logs group ('' to disable; default %(default)s)",
    )
    aws.add_argument(
        "--driver-pod-template",
        metavar="FILE",
        help="driver pod template (default: emr-on-eks/pod-templates/driver.yaml)",
    )
    aws.add_argument(
        "--executor-pod-template",
        metavar="FILE",
        help="executor pod template (default: emr-on-eks/pod-templates/executor.yaml)",
    )
    aws.add_argument(
        "--job-template-id",
        metavar="ID",
        help="start from this job template (emr-on-eks/create-job-template.json)",
    )
    aws.add_argument(
        "--client-token", metavar="TOKEN", help="idempotency token (default: a hash of the request)"
    )
    sizing = spec.Resources()
    for flag, what in (
        ("executors", "Spark executors"),
        ("executor_cores", "cores per executor"),
        ("executor_memory", "JVM memory per executor"),
        ("driver_cores", "driver cores"),
        ("driver_memory", "driver JVM memory"),
    ):
        aws.add_argument(
            "--" + flag.replace("_", "-"),
            default=getattr(sizing, flag),
            help=f"{what} (default %(default)s)",
        )
    aws.add_argument(
        "--max-attempts",
        type=int,
        default=spec.MAX_ATTEMPTS,
        metavar="N",
        help="attempts EMR gives a failed driver (retryPolicyConfiguration); "
        "retries run with --resume and continue the failed attempt; 1 = no "
        "retries (default %(default)s)",
    )
    aws.add_argument(
        "--wait",
        action="store_true",
        help="follow the job run until it ends; exit 0 only if it COMPLETED",
    )
    aws.add_argument(
        "--poll-seconds",
        type=float,
        default=10.0,
        help="first --wait polling interval; grows to 60 s (default 10)",
    )
    aws.add_argument(
        "--cancel-on-interrupt",
        action="store_true",
        help="Ctrl-C during --wait cancels the run without asking",
    )
    aws.add_argument(
        "--dry-run", action="store_true", help="print the validated request JSON and call nothing"
    )
    RunConfig.add_arguments(parser.add_argument_group("job options (as for `featurizer run`)"))
    parser.set_defaults(handler=_submit)


# ---- plan: everything computed locally ---------------------------------------------
@dataclass(frozen=True)
class Plan:
    config: RunConfig
    operation_params: dict[str, Any]  # the StartJobRun request
    uploads: dict[str, bytes]  # s3:// URI -> content
    staging_uri: str
    log_uri: str
    log_group: str | None


def plan(args: argparse.Namespace) -> Plan:
    if args.max_attempts < 1:
        raise ConfigError(f"--max-attempts must be >= 1, got {args.max_attempts}")
    config = spec.with_retries(RunConfig.from_namespace(args), args.max_attempts)
    _check_job_options(config)
    output_bucket = _bucket(config.output)
    staging = storage.normalize(args.staging_uri or f"s3://{output_bucket}/_featurizer/emr")
    _require_s3(staging, "--staging-uri")
    if storage.is_inside(staging, config.output) or storage.is_inside(config.output, staging):
        raise ConfigError(
            f"--staging-uri {staging} overlaps --output {config.output}: "
            "the job refuses a non-empty output; pick another prefix"
        )
    log_uri = storage.normalize(args.log_uri or storage.join(staging, "logs"))
    _require_s3(log_uri, "--log-uri")
    templates = {
        role: _pod_template(role, getattr(args, f"{role}_pod_template"))
        for role in ("driver", "executor")
    }
    digest = hashlib.sha256(b"".join(templates.values())).hexdigest()[:12]
    uris = {
        role: storage.join(staging, "pod-templates", digest, f"{role}.yaml") for role in templates
    }
    resources = _resources(args)
    name = args.name or spec.job_name(config)
    log_group = args.log_group or None
    if args.job_template_id:
        params = spec.template_parameters(
            config,
            args.image,
            log_uri,
            uris["driver"],
            uris["executor"],
            resources,
            args.release_label,
        )
        request = spec.template_run_request(
            args.job_template_id,
            args.virtual_cluster_id,
            name,
            params,
            args.client_token,
            args.max_attempts,
        )
    else:
        _check_role_arn(args.execution_role_arn)
        target = spec.Target(
            args.virtual_cluster_id,
            args.execution_role_arn,
            args.image,
            log_uri,
            uris["driver"],
            uris["executor"],
            args.release_label,
            log_group,
            resources,
        )
        request = spec.start_job_run_request(
            config, target, name, args.client_token, args.max_attempts
        )
    spec.validate("StartJobRun", request)
    return Plan(
        config,
        request,
        {uris[role]: templates[role] for role in templates},
        staging,
        log_uri,
        log_group,
    )


def _resources(args: argparse.Namespace) -> spec.Resources:
    for flag in ("executors", "executor_cores", "driver_cores"):
        if not str(getattr(args, flag)).isdigit() or int(getattr(args, flag)) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a positive integer")
    for flag in ("executor_memory", "driver_memory"):
        if not re.fullmatch(r"[1-9][0-9]*[kmgt]?", str(getattr(args, flag)), re.IGNORECASE):
            raise ConfigError(f"--{flag.replace('_', '-')} must be a size like 4g or 4096m")
    return spec.Resources(
        args.executors,
        args.executor_cores,
        args.executor_memory,
        args.driver_cores,
        args.driver_memory,
    )


def _check_job_options(config: RunConfig) -> None:
    for flag, uri in (("--input", config.input), ("--output", config.output)):
        _require_s3(storage.normalize(uri), flag)
    if config.master:
        raise ConfigError("--master is set by EMR on EKS: leave it out")


def _require_s3(uri: str, flag: str) -> None:
    if storage.scheme_of(uri) not in storage.S3_SCHEMES:
        raise ConfigError(f"{flag} must be an S3 URI (s3://bucket/prefix) for EMR, got {uri}")


def _check_role_arn(arn: str | None) -> None:
    if not arn:
        raise ConfigError("--execution-role-arn is required (or use --job-template-id)")
    if not spec.ROLE_ARN.match(arn):
        raise ConfigError(
            f"--execution-role-arn {arn!r} is not an IAM role ARN: expected "
            "arn:aws:iam::<12-digit account>:role/<name>"
        )


def _pod_template(role: str, path: str | None) -> bytes:
    if not path:
        return spec.pod_template_yaml(role).encode()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"--{role}-pod-template {path}: {exc.strerror}") from None


def _bucket(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def _key(uri: str) -> str:
    return uri.split("://", 1)[1].partition("/")[2]


# ---- submission --------------------------------------------------------------------
def _submit(args: argparse.Namespace) -> int:
    the_plan = plan(args)
    if args.dry_run:
        print(json.dumps(the_plan.operation_params, indent=2))
        for uri in the_plan.uploads:
            _info(f"dry run: would upload {uri}; nothing was called")
        return 0
    aws = Aws(args.region)
    request = the_plan.operation_params
    aws.check_virtual_cluster(request["virtualClusterId"])
    aws.check_buckets(the_plan)
    for uri, body in the_plan.uploads.items():
        aws.upload(uri, body)
        _info(f"uploaded {uri}")
    job = aws.start_job_run(request)
    _info(
        f"job run {job['id']} started (name {job['name']}, client token "
        f"{request['clientToken']}) on virtual cluster {request['virtualClusterId']}"
    )
    _print_log_locations(request["virtualClusterId"], job["id"], the_plan)
    if not args.wait:
        print(job["id"])
        return 0
    final = follow(
        aws,
        request["virtualClusterId"],
        job["id"],
        args.poll_seconds,
        cancel_without_asking=args.cancel_on_interrupt,
    )
    print(job["id"])
    return _outcome(final)


def _outcome(job: dict[str, Any]) -> int:
    """0 for a COMPLETED job run, else JobRunFailed naming its state and reason."""
    if job["state"] != "COMPLETED":
        reason = " ".join(filter(None, (job.get("failureReason"), job.get("stateDetails"))))
        raise JobRunFailed(
            f"job run {job['id']} ended {job['state']}" + (f": {reason}" if reason else "")
        )
    return 0


# ---- following a job run: status, logs, cancel -------------------------------------
def status(args: argparse.Namespace) -> int:
    """`featurizer status JOB_ID --virtual-cluster-id VC [--wait]`."""
    aws = Aws(args.region)
    vc, job_id = args.virtual_cluster_id, args.name
    if args.wait:
        job = follow(aws, vc, job_id, args.poll_seconds)
    else:
        job = aws.describe_job_run(vc, job_id)
        attempts = (job.get("retryPolicyExecution") or {}).get("currentAttemptCount", 1)
        reason = " ".join(filter(None, (job.get("failureReason"), job.get("stateDetails"))))
        print(
            f"{job_id}\t{job['state']}\tname={job.get('name', '')}\tattempt={attempts}"
            f"\t{reason}".rstrip()
        )
        if job["state"] not in spec.TERMINAL_STATES:
            return 0
    return _outcome(job)


def logs(args: argparse.Namespace) -> int:
    """`featurizer logs JOB_ID --virtual-cluster-id VC`: the driver's stderr and stdout from
    the run's S3 monitoring logs (EMR uploads them while the driver runs and when it ends)."""
    import gzip
    import zlib

    aws = Aws(args.region)
    vc, job_id = args.virtual_cluster_id, args.name
    job = aws.describe_job_run(vc, job_id)
    monitoring = (job.get("configurationOverrides") or {}).get("monitoringConfiguration") or {}
    log_uri = (monitoring.get("s3MonitoringConfiguration") or {}).get("logUri")
    if not log_uri:
        raise ConfigError(
            f"job run {job_id} has no S3 monitoring logs (it was started without "
            f"a logUri): see CloudWatch or `kubectl logs` of its driver pod"
        )
    found = False
    for stream, uri in spec.driver_log_uris(log_uri, vc, job_id).items():
        body = aws.read_optional(uri)
        if body is None:
            continue
        found = True
        try:
            text = gzip.decompress(body).decode("utf-8", "replace")
        except (OSError, EOFError, zlib.error):  # EMR uploads a growing file as is
            text = body.decode("utf-8", "replace")
        lines = text.splitlines()[-args.tail :] if args.tail else text.splitlines()
        print(f"==> driver {stream} ({uri}) <==")
        print("\n".join(lines))
    if not found:
        raise FeaturizerError(
            f"no driver log of job run {job_id} under {log_uri} yet (state "
            f"{job['state']}): EMR uploads it while the driver runs"
        )
    return 0


def cancel(args: argparse.Namespace) -> int:
    """`featurizer cancel JOB_ID --virtual-cluster-id VC`."""
    aws = Aws(args.region)
    job = aws.describe_job_run(args.virtual_cluster_id, args.name)
    if job["state"] in spec.TERMINAL_STATES:
        print(f"job run {args.name} already ended {job['state']}: nothing to cancel")
        return 0
    aws.cancel_job_run(args.virtual_cluster_id, args.name)
    print(
        f"cancel requested for job run {args.name} (it passes CANCEL_PENDING, then "
        f"CANCELLED: featurizer status {args.name} --virtual-cluster-id "
        f"{args.virtual_cluster_id} --wait)"
    )
    return 0


def _print_log_locations(vc: str, job_id: str, the_plan: Plan) -> None:
    base = f"{the_plan.log_uri}/{vc}/jobs/{job_id}"
    driver = spec.driver_log_uris(the_plan.log_uri, vc, job_id)["stdout"].rsplit("/", 1)[0]
    _info(
        f"driver logs: {driver}/(stdout.gz|stderr.gz): featurizer logs {job_id} "
        f"--virtual-cluster-id {vc}"
    )
    _info(f"job runner logs: {base}/containers/ (control logs under {base}/control-logs/)")
    _info(
        f"state: featurizer status {job_id} --virtual-cluster-id {vc} [--wait]; cancel: "
        f"featurizer cancel {job_id} --virtual-cluster-id {vc}"
    )
    if the_plan.log_group:
        _info(
            f"CloudWatch: log group {the_plan.log_group}, streams "
            f"{spec.LOG_STREAM_PREFIX}/{vc}/jobs/{job_id}/..."
        )


def follow(
    aws: Aws,
    vc: str,
    job_id: str,
    poll_seconds: float,
    cancel_without_asking: bool = False,
    max_poll_seconds: float = 60.0,
    ask: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Poll DescribeJobRun with a growing interval (reset on every change), print each
    state change, return the final job run. Ctrl-C offers to cancel the run."""
    state, delay = None, poll_seconds
    try:
        while True:
            job = aws.describe_job_run(vc, job_id)
            if job["state"] != state:
                details = f" ({job['stateDetails']})" if job.get("stateDetails") else ""
                _info(f"{time.strftime('%H:%M:%S')} job run {job_id}: {job['state']}{details}")
                state, delay = job["state"], poll_seconds
            if state in spec.TERMINAL_STATES:
                return job
            time.sleep(delay)
            delay = min(delay * 1.5, max_poll_seconds)
    except KeyboardInterrupt:
        return _interrupted(aws, vc, job_id, cancel_without_asking, ask or _ask)


def _interrupted(
    aws: Aws, vc: str, job_id: str, cancel_without_asking: bool, ask: Callable[[str], str]
) -> dict[str, Any]:
    if not cancel_without_asking:
        try:
            answer = ask(f"\ncancel job run {job_id}? [y/N] ")
        except (EOFError, KeyboardInterrupt):
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise JobRunFailed(
                f"stopped following job run {job_id}; it keeps running. "
                f"Cancel it with: featurizer cancel {job_id} "
                f"--virtual-cluster-id {vc} (or aws emr-containers "
                f"cancel-job-run --id {job_id} --virtual-cluster-id {vc})"
            ) from None
    aws.cancel_job_run(vc, job_id)
    _info(f"cancel requested for job run {job_id}")
    job: dict[str, Any] = {}
    try:  # EMR passes through CANCEL_PENDING; a second Ctrl-C stops waiting for it
        for _ in range(30):
            job = aws.describe_job_run(vc, job_id)
            if job["state"] in spec.TERMINAL_STATES:
                break
            time.sleep(2)
    except KeyboardInterrupt:
        pass
    _info(f"job run {job_id}: {job.get('state', 'CANCEL_PENDING')}")
    return job or {"state": "CANCEL_PENDING"}


# ---- AWS calls with one-line errors ------------------------------------------------
class Aws:
    def __init__(self, region: str | None) -> None:
        import boto3
        from botocore.config import Config

        # AWS_REGION is what the AWS SDKs and CLI v2 read; boto3 reads AWS_DEFAULT_REGION.
        session = boto3.session.Session(region_name=region or os.environ.get("AWS_REGION"))
        if not session.region_name:
            raise ConfigError("no AWS region: pass --region or set AWS_REGION")
        self.region = session.region_name
        retries = Config(retries={"mode": "standard", "max_attempts": 5})
        self.emr = session.client(spec.SERVICE, config=retries)
        self.s3 = session.client("s3", config=retries)

    def call(self, what: str, function: Callable[..., Any], **params: Any) -> Any:
        from botocore import exceptions

        try:
            return function(**params)
        except exceptions.NoCredentialsError:
            raise ConfigError(
                "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            ) from None
        except exceptions.EndpointConnectionError as exc:
            raise ConfigError(
                f"{what}: cannot reach {exc.kwargs.get('endpoint_url')}: "
                "check --region and AWS_ENDPOINT_URL"
            ) from None
        except exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise _client_error(
                what, error.get("Code", ""), error.get("Message", ""), self.region
            ) from None

    def check_virtual_cluster(self, vc: str) -> None:
        cluster = self.call(f"virtual cluster {vc}", self.emr.describe_virtual_cluster, id=vc)[
            "virtualCluster"
        ]
        if cluster["state"] != "RUNNING":
            raise ConfigError(f"virtual cluster {vc} is {cluster['state']}, not RUNNING")

    def check_buckets(self, the_plan: Plan) -> None:
        config, checked = the_plan.config, set()
        for flag, uri in (
            ("--staging-uri", the_plan.staging_uri),
            ("--log-uri", the_plan.log_uri),
            ("--output", config.output),
            ("--input", config.input),
        ):
            if _bucket(uri) not in checked:
                self.call(f"{flag} {uri}", self.s3.head_bucket, Bucket=_bucket(uri))
                checked.add(_bucket(uri))
        prefix = _key(storage.normalize(config.input)).rstrip("/")
        listing = self.call(
            f"--input {config.input}",
            self.s3.list_objects_v2,
            Bucket=_bucket(config.input),
            Prefix=prefix + "/" if prefix else "",
            MaxKeys=1,
        )
        if not listing.get("KeyCount"):
            raise ConfigError(f"--input {config.input} holds no objects")

    def upload(self, uri: str, body: bytes) -> None:
        self.call(
            f"upload {uri}",
            self.s3.put_object,
            Bucket=_bucket(uri),
            Key=_key(uri),
            Body=body,
            ContentType="application/yaml",
        )

    def start_job_run(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.call("StartJobRun", self.emr.start_job_run, **request)

    def describe_job_run(self, vc: str, job_id: str) -> dict[str, Any]:
        return self.call(
            f"job run {job_id}", self.emr.describe_job_run, id=job_id, virtualClusterId=vc
        )["jobRun"]

    def cancel_job_run(self, vc: str, job_id: str) -> None:
        self.call(
            f"cancel job run {job_id}", self.emr.cancel_job_run, id=job_id, virtualClusterId=vc
        )

    def read_optional(self, uri: str) -> bytes | None:
        """The object's bytes, or None if it does not exist (yet)."""
        from botocore import exceptions

        try:
            return self.s3.get_object(Bucket=_bucket(uri), Key=_key(uri))["Body"].read()
        except exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in ("NoSuchKey", "404"):
                return None
            raise _client_error(
                f"reading {uri}", error.get("Code", ""), error.get("Message", ""), self.region
            ) from None


def _client_error(what: str, code: str, message: str, region: str) -> ConfigError:
    if code in ("404", "NoSuchBucket"):
        return ConfigError(
            f"{what}: the bucket does not exist (or is in another account): "
            "create it or point the option elsewhere"
        )
    if code in ("403", "AccessDenied", "AccessDeniedException"):
        return ConfigError(
            f"{what}: access denied ({message or code}): check your IAM "
            "permissions (emr-on-eks/README.md)"
        )
    if "irtual cluster" in message and code in ("ResourceNotFoundException", "ValidationException"):
        return ConfigError(
            f"{what} not found in {region}: check --virtual-cluster-id and "
            f"--region (aws emr-containers list-virtual-clusters --region "
            f"{region})"
        )
    return ConfigError(f"{what}: {code}: {message}")


def _ask(question: str) -> str:
    """Ask on stderr (stdout carries only the job run id), read the answer from stdin."""
    print(question, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def _info(message: str) -> None:
    print(f"featurizer: {message}", file=sys.stderr, flush=True)
