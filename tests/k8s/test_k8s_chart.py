"""The helm chart against the job's single option definition (RunConfig), with the real helm."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import types
import typing
from pathlib import Path

import pytest
import yaml

import featurizer
from featurizer.config import ENGINES, RunConfig
from featurizer.launch.k8s import camel

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "featurizer"
FIXTURES = Path(__file__).with_name("fixtures")
FIELDS = {camel(f.name): f for f in dataclasses.fields(RunConfig)}
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", tuple: "array"}
# Each sets job options over the chart's values.yaml; together they move every option off
# its default (checked below), so an option missing from the chart cannot go unnoticed.
ROUND_TRIP_CASES = sorted(FIXTURES.glob("job-*.yaml"))


def only(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, [doc["kind"] for doc in docs]
    return found[0]


def chart_values(name: str = "values.yaml") -> dict:
    return yaml.safe_load((CHART / name).read_text())


def expected_config(job_values: dict) -> RunConfig:
    """What the job should run with, built directly (not via argv) from the merged values:
    the chart's job defaults overlaid by `job_values`, a null removing a key (helm's rule)."""
    merged = {**chart_values()["job"], **job_values}
    kwargs = {
        FIELDS[key].name: tuple(value) if isinstance(value, list) else value
        for key, value in merged.items()
        if value is not None
    }
    return RunConfig(**kwargs)


def json_types(hint: typing.Any) -> set[str]:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return {
        "null" if arg is type(None) else JSON_TYPES[typing.get_origin(arg) or arg]
        for arg in (typing.get_args(hint) if union else (hint,))
    }


# ---- every job option is in the chart --------------------------------------------------------


def test_values_yaml_has_every_job_option_documented():
    assert set(chart_values()["job"]) == set(FIELDS), (
        "helm/featurizer/values.yaml `job` must list exactly RunConfig's options"
    )
    lines = (CHART / "values.yaml").read_text().splitlines()
    for key in FIELDS:
        index = next(i for i, line in enumerate(lines) if re.match(rf"  {key}:", line))
        assert lines[index - 1].strip().startswith("#"), f"job.{key} has no comment"


def test_schema_types_follow_runconfig():
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["job"]
    assert set(schema["properties"]) == set(FIELDS)
    assert set(schema["required"]) == {
        key for key, f in FIELDS.items() if f.metadata.get("required")
    }
    hints = typing.get_type_hints(RunConfig)
    for key, f in FIELDS.items():
        entry = schema["properties"][key]
        nullable = set() if f.metadata.get("required") else {None}
        if "choices" in f.metadata:
            assert set(entry["enum"]) == set(f.metadata["choices"]) | nullable, key
            continue
        declared = entry["type"] if isinstance(entry["type"], list) else [entry["type"]]
        expected = json_types(hints[f.name]) | ({"null"} if nullable else set())
        assert set(declared) == expected, key
    assert set(ENGINES) <= set(schema["properties"]["engine"]["enum"])


def test_round_trip_cases_cover_every_option():
    moved = set()
    for case in ROUND_TRIP_CASES:
        config = expected_config(yaml.safe_load(case.read_text())["job"])
        moved |= {key for key, f in FIELDS.items() if getattr(config, f.name) != f.default}
    missing = set(FIELDS) - moved
    assert not missing, f"no tests/k8s/fixtures/job-*.yaml sets {sorted(missing)}"


@pytest.mark.parametrize("case", ROUND_TRIP_CASES, ids=lambda path: path.stem)
def test_rendered_arguments_parse_back_to_the_config(template, case: Path):
    app = only(template("--values", str(case)), "SparkApplication")
    arguments = app["spec"]["arguments"]
    assert all(isinstance(arg, str) for arg in arguments)
    assert RunConfig.from_argv(arguments) == expected_config(
        yaml.safe_load(case.read_text())["job"]
    )


@pytest.mark.parametrize("values", ["values-kind.yaml", "values-eks.yaml"])
def test_shipped_values_render_the_jobs_they_declare(template, values: str):
    app = only(template("--values", str(CHART / values)), "SparkApplication")
    config = RunConfig.from_argv(app["spec"]["arguments"])
    assert config == expected_config(chart_values(values)["job"])
    assert config.input.startswith("s3a://") and config.resume


# ---- bad values fail at helm template / install ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["--values", str(FIXTURES / "bad-values-wrong-type.yaml")], "/driver/cores"),
        (["--set-string", "job.pcaK=8"], "/job/pcaK"),
        (["--set", "job.pcaVarience=0.9"], "pcaVarience"),
        (["--set", "job.overwrite=true"], "/job/resume"),
        (["--set", "job.engine=onnx"], "/job/engine"),
        (["--set", "job.conf[0]=no-equals-sign"], "/job/conf/0"),
        (["--set", "executor.memory=3 GB"], "/executor/memory"),
        (["--set", "image.tag=latest"], "/image/tag"),
        (["--set", "sparkConf.spark\\.executor\\.instances=2"], "/sparkConf"),
        ([], "/job/input"),
        (["--set", "driver.tolerations[0].operator=Maybe"], "/driver/tolerations/0/operator"),
        (["--set", "executor.priorityClassName=Not_A_Name"], "/executor/priorityClassName"),
        (
            ["--set", "decommission.enabled=true", "--set", "decommission.forceKillTimeout=soon"],
            "/decommission/forceKillTimeout",
        ),
        (["--set", "eventLog.enabled=true", "--set", "eventLog.dir=spark-events"], "/eventLog/dir"),
        (["--set", "driver.affinity.nodeAfinity.x=y"], "/driver/affinity"),
    ],
    ids=[
        "wrong-type-file",
        "string-for-int",
        "unknown-option",
        "overwrite-and-resume",
        "unknown-engine",
        "conf-without-equals",
        "memory-string",
        "latest-tag",
        "non-string-sparkconf",
        "no-input",
        "toleration-operator",
        "priority-class-name",
        "kill-timeout",
        "event-log-dir",
        "affinity-typo",
    ],
)
def test_schema_rejects_bad_values(helm, args: list[str], where: str):
    defaults = (
        [] if args == [] else ["--set", "job.input=s3a://b/in", "--set", "job.output=s3a://b/out"]
    )
    proc = subprocess.run(
        [helm, "template", "featurizer", str(CHART), *defaults, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert where in proc.stderr


# ---- what the manifests promise --------------------------------------------------------------


@pytest.fixture(scope="module", params=["values-kind.yaml", "values-eks.yaml"])
def rendered(request, template) -> list[dict]:
    return template("--values", str(CHART / request.param))


def test_spark_application_fields(rendered):
    spec = only(rendered, "SparkApplication")["spec"]
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    assert spec["sparkVersion"] == pins["pyspark"]
    assert spec["image"].endswith(f"featurizer:{featurizer.__version__}")
    assert spec["imagePullPolicy"] == "IfNotPresent"
    assert spec["mainApplicationFile"] == "local:///opt/featurizer/job/main.py"
    assert spec["restartPolicy"]["type"] == "OnFailure"
    assert spec["restartPolicy"]["onFailureRetries"] >= 1
    assert (
        spec["dynamicAllocation"]["enabled"] and spec["dynamicAllocation"]["shuffleTrackingEnabled"]
    )
    assert spec["timeToLiveSeconds"] > 0
    for conf in ("sparkConf", "hadoopConf"):
        assert all(isinstance(v, str) for v in (spec.get(conf) or {}).values()), conf
        assert not any(
            re.search(r"secret|access\.key|password", k, re.I) for k in spec.get(conf) or {}
        ), f"credentials inline in {conf}"


def test_pods_are_hardened_and_sized(rendered):
    spec = only(rendered, "SparkApplication")["spec"]
    account = only(rendered, "ServiceAccount")["metadata"]["name"]
    for role in ("driver", "executor"):
        pod = spec[role]
        assert isinstance(pod["cores"], int) and pod["cores"] >= 1
        assert re.fullmatch(r"\d+[kmgt]", pod["memory"]) and re.fullmatch(
            r"\d+[kmgt]", pod["memoryOverhead"]
        )
        assert pod["serviceAccount"] == account
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 185
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert "env" not in pod  # credentials only via envFrom (a Secret) or the IAM role
    assert spec["executor"]["instances"] >= 1


def test_credentials_come_from_a_secret_or_the_service_account(template):
    kind = template("--values", str(CHART / "values-kind.yaml"))
    assert only(kind, "SparkApplication")["spec"]["executor"]["envFrom"] == [
        {"secretRef": {"name": "featurizer-s3"}}
    ]
    eks = template("--values", str(CHART / "values-eks.yaml"))
    assert "envFrom" not in only(eks, "SparkApplication")["spec"]["driver"]
    annotations = only(eks, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_rbac_is_namespaced_and_minimal(rendered):
    role, binding = only(rendered, "Role"), only(rendered, "RoleBinding")
    assert not [doc for doc in rendered if doc["kind"].startswith("Cluster")]
    assert [(rule["apiGroups"], sorted(rule["resources"])) for rule in role["rules"]] == [
        ([""], ["configmaps", "persistentvolumeclaims", "pods", "services"])
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "namespace": "featurizer",
            "name": only(rendered, "ServiceAccount")["metadata"]["name"],
        }
    ]


def test_schedule_renders_the_same_spec_as_a_scheduled_application(template):
    kind = [
        "--values",
        str(CHART / "values-kind.yaml"),
        "--set",
        "job.output=s3a://featurizer/output/{app}",
    ]
    once = only(template(*kind), "SparkApplication")["spec"]
    docs = template(*kind, "--set", "schedule.enabled=true", "--set", "schedule.cron=@hourly")
    assert not [doc for doc in docs if doc["kind"] == "SparkApplication"]
    scheduled = only(docs, "ScheduledSparkApplication")["spec"]
    assert scheduled["schedule"] == "@hourly" and scheduled["template"] == once


@pytest.mark.parametrize(
    ("extra", "accepted"),
    [
        ([], False),  # every run: one output
        (["--set", "job.output=s3a://b/out/{app}"], True),  # one per run
        (["--set", "job.output=s3a://b/out/{date}"], True),  # one per day
        (["--set", "job.overwrite=true", "--set", "job.resume=null"], True),  # replaced on purpose
        (["--set", "job.incremental=true"], True),  # each run adds to one
    ],
    ids=["same-output", "app", "date", "overwrite", "incremental"],
)
def test_a_schedule_needs_an_output_per_run(helm, extra: list[str], accepted: bool):
    proc = subprocess.run(
        [
            helm,
            "template",
            "featurizer",
            str(CHART),
            "--set",
            "job.input=s3a://b/in",
            "--set",
            "job.output=s3a://b/out",
            "--set",
            "schedule.enabled=true",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode == 0) == accepted, proc.stderr
    if not accepted:
        assert "every run would write the same job.output" in proc.stderr
        assert "put {app} in it" in proc.stderr


# ---- cluster operations: placement per role, decommissioning, history, metrics ---------------


def operations(template) -> list[dict]:
    return template(
        "--values", str(CHART / "values-kind.yaml"), "--values", str(FIXTURES / "operations.yaml")
    )


def test_each_role_has_its_own_placement(template):
    spec = only(operations(template), "SparkApplication")["spec"]
    driver, executor = spec["driver"], spec["executor"]
    arch = {"kubernetes.io/arch": "amd64"}  # top level: both roles
    assert driver["nodeSelector"] == {**arch, "karpenter.sh/capacity-type": "on-demand"}
    assert executor["nodeSelector"] == {**arch, "karpenter.sh/capacity-type": "spot"}
    batch = {"key": "workload", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
    assert driver["tolerations"] == [
        batch,
        {"key": "dedicated", "operator": "Equal", "value": "spark-driver", "effect": "NoSchedule"},
    ]
    assert executor["tolerations"] == [
        batch,
        {"key": "spot", "operator": "Exists", "effect": "NoSchedule"},
    ]
    zone = driver["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert zone["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["us-east-1a"]
    assert "affinity" not in executor
    assert driver["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert "karpenter.sh/do-not-disrupt" not in executor["annotations"]
    assert (driver["priorityClassName"], executor["priorityClassName"]) == (
        "spark-driver",
        "spark-executor",
    )
    for pod in (driver, executor):
        assert pod["labels"]["team"] == "vision"
        assert pod["labels"]["app.kubernetes.io/name"] == "featurizer"


def test_eks_values_keep_the_driver_on_demand_and_executors_on_spot(template):
    spec = only(template("--values", str(CHART / "values-eks.yaml")), "SparkApplication")["spec"]
    assert spec["driver"]["nodeSelector"]["karpenter.sh/capacity-type"] == "on-demand"
    assert spec["driver"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert spec["executor"]["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"
    conf = spec["sparkConf"]
    grace = int(conf["spark.kubernetes.executor.terminationGracePeriodSeconds"])
    kill = int(conf["spark.executor.decommission.forceKillTimeout"].removesuffix("s"))
    assert conf["spark.decommission.enabled"] == "true" and kill < grace <= 120  # spot: 2 min


def test_decommission_event_log_and_metrics_become_spark_settings(template):
    spec = only(operations(template), "SparkApplication")["spec"]
    conf = spec["sparkConf"]
    assert {key: conf[key] for key in conf if "decommission" in key or "GracePeriod" in key} == {
        "spark.decommission.enabled": "true",
        "spark.storage.decommission.enabled": "true",
        "spark.storage.decommission.shuffleBlocks.enabled": "true",
        "spark.storage.decommission.rddBlocks.enabled": "true",
        "spark.executor.decommission.forceKillTimeout": "90s",
        "spark.kubernetes.executor.terminationGracePeriodSeconds": "100",
    }
    assert (conf["spark.eventLog.enabled"], conf["spark.eventLog.dir"]) == (
        "true",
        "s3a://featurizer/spark-events",
    )
    assert conf["spark.eventLog.rolling.enabled"] == "true"
    assert conf["spark.ui.prometheus.enabled"] == "true"
    assert (
        conf["spark.metrics.conf.*.sink.prometheusServlet.class"]
        == "org.apache.spark.metrics.sink.PrometheusServlet"
    )
    annotations = spec["driver"]["annotations"]
    assert (
        annotations["prometheus.io/scrape"],
        annotations["prometheus.io/port"],
        annotations["prometheus.io/path"],
    ) == ("true", "4040", "/metrics/prometheus")
    plain = only(template("--values", str(CHART / "values-kind.yaml")), "SparkApplication")
    assert not any(
        key.startswith(("spark.decommission", "spark.eventLog", "spark.metrics"))
        for key in plain["spec"].get("sparkConf") or {}
    )


def test_a_users_spark_conf_wins_over_the_charts_own(template):
    spec = only(
        template(
            "--values",
            str(CHART / "values-kind.yaml"),
            "--values",
            str(FIXTURES / "operations.yaml"),
            "--set-string",
            "sparkConf.spark\\.eventLog\\.rolling\\.enabled=false",
        ),
        "SparkApplication",
    )["spec"]
    assert spec["sparkConf"]["spark.eventLog.rolling.enabled"] == "false"


def test_history_server_reads_the_event_log_with_the_charts_s3_settings(template):
    docs = operations(template)
    deployment, service = only(docs, "Deployment"), only(docs, "Service")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["spark-class", "org.apache.spark.deploy.history.HistoryServer"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    options = env["SPARK_HISTORY_OPTS"].split()
    assert "-Dspark.history.fs.logDirectory=s3a://featurizer/spark-events" in options
    kind_s3 = chart_values("values-kind.yaml")["s3"]
    assert f"-Dspark.hadoop.fs.s3a.endpoint={kind_s3['endpoint']}" in options
    assert container["envFrom"] == [{"secretRef": {"name": kind_s3["credentialsSecret"]}}]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"]
    assert service["spec"]["ports"][0]["port"] == 18080
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert not [
        doc
        for doc in template("--values", str(CHART / "values-kind.yaml"))
        if doc["kind"] in ("Deployment", "Service")
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "eventLog.enabled=true"], "eventLog.enabled needs eventLog.dir"),
        (["--set", "historyServer.enabled=true"], "historyServer.enabled needs"),
    ],
    ids=["event-log-without-dir", "history-without-dir"],
)
def test_operations_values_that_cannot_work_are_refused(helm, args: list[str], message: str):
    proc = subprocess.run(
        [
            helm,
            "template",
            "featurizer",
            str(CHART),
            "--set",
            "job.input=s3a://b/in",
            "--set",
            "job.output=s3a://b/out",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and message in proc.stderr


def test_checked_in_manifests_are_the_chart_rendered(tmp_path: Path, helm: str):
    subprocess.run(
        ["bash", str(ROOT / "hack" / "k8s.sh"), "render", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    rendered = sorted(path.name for path in tmp_path.iterdir())
    assert rendered == sorted(path.name for path in (ROOT / "k8s").glob("*.yaml"))
    for name in rendered:
        assert (ROOT / "k8s" / name).read_text() == (tmp_path / name).read_text(), (
            f"k8s/{name} is stale: run make k8s-render"
        )


def test_chart_version_and_image_path_match_the_project():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == chart["version"] == featurizer.__version__
    dockerfile = ROOT / "docker" / "Dockerfile"
    if dockerfile.is_file():  # the image bakes job/main.py where mainApplicationFile points
        assert "/opt/featurizer/job/main.py" in dockerfile.read_text()


def test_operator_install_watches_our_namespace_and_leaves_rbac_to_our_chart(helm):
    """`make operator-install`'s helm values, rendered with the operator's own chart (v2.5.2,
    from its Go module): controller and webhook watch `featurizer`; in that namespace the
    operator grants only its own accounts (our chart owns the driver's account and Role)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "hack" / "kind.sh"), "operator-template"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    docs = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    deployments = [doc for doc in docs if doc["kind"] == "Deployment"]
    assert len(deployments) == 2  # controller and webhook
    for deployment in deployments:
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--namespaces=featurizer" in args, deployment["metadata"]["name"]
    ours = [doc for doc in docs if doc["metadata"].get("namespace") == "featurizer"]
    assert sorted(doc["kind"] for doc in ours) == ["Role", "Role", "RoleBinding", "RoleBinding"]
    for binding in (doc for doc in ours if doc["kind"] == "RoleBinding"):
        assert [subject["namespace"] for subject in binding["subjects"]] == ["spark-operator"]


def test_the_charts_readme_is_generated_from_its_values(tmp_path: Path):
    """helm/featurizer/README.md is helm-docs' rendering of values.yaml (make chart-docs), and
    every value there has a `# --` description."""
    helm_docs = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh"), "helm-docs"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    ).stdout.strip()
    proc = subprocess.run(
        [
            helm_docs,
            "--chart-search-root",
            "featurizer",
            "--template-files",
            "README.md.gotmpl",
            "--sort-values-order",
            "file",
            "--dry-run",
            "--log-level",
            "warning",
        ],
        cwd=CHART.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (CHART / "README.md").read_text().strip(), (
        "helm/featurizer/README.md is stale: run make chart-docs"
    )
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "`" in line]
    undocumented = [
        row.split(" | ")[0].lstrip("| ")
        for row in rows
        if row.rstrip().endswith("|  |") or row.rstrip().endswith("| |")
    ]
    assert len(rows) > 80 and not undocumented, undocumented
