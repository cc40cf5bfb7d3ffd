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
    kwargs = {FIELDS[key].name: tuple(value) if isinstance(value, list) else value
              for key, value in merged.items() if value is not None}
    return RunConfig(**kwargs)


def json_types(hint: typing.Any) -> set[str]:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return {"null" if arg is type(None) else JSON_TYPES[typing.get_origin(arg) or arg]
            for arg in (typing.get_args(hint) if union else (hint,))}


# ---- every job option is in the chart --------------------------------------------------------

def test_values_yaml_has_every_job_option_documented():
    assert set(chart_values()["job"]) == set(FIELDS), (
        "helm/featurizer/values.yaml `job` must list exactly RunConfig's options")
    lines = (CHART / "values.yaml").read_text().splitlines()
    for key in FIELDS:
        index = next(i for i, line in enumerate(lines) if re.match(rf"  {key}:", line))
        assert lines[index - 1].strip().startswith("#"), f"job.{key} has no comment"


def test_schema_types_follow_runconfig():
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["job"]
    assert set(schema["properties"]) == set(FIELDS)
    assert set(schema["required"]) == {key for key, f in FIELDS.items()
                                       if f.metadata.get("required")}
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
    assert RunConfig.from_argv(arguments) == expected_config(yaml.safe_load(case.read_text())["job"])


@pytest.mark.parametrize("values", ["values-kind.yaml", "values-eks.yaml"])
def test_shipped_values_render_the_jobs_they_declare(template, values: str):
    app = only(template("--values", str(CHART / values)), "SparkApplication")
    config = RunConfig.from_argv(app["spec"]["arguments"])
    assert config == expected_config(chart_values(values)["job"])
    assert config.input.startswith("s3a://") and config.resume


# ---- bad values fail at helm template / install ---------------------------------------------

@pytest.mark.parametrize("args, where", [
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
], ids=["wrong-type-file", "string-for-int", "unknown-option", "overwrite-and-resume",
        "unknown-engine", "conf-without-equals", "memory-string", "latest-tag",
        "non-string-sparkconf", "no-input"])
def test_schema_rejects_bad_values(helm, args: list[str], where: str):
    defaults = [] if args == [] else ["--set", "job.input=s3a://b/in", "--set",
                                      "job.output=s3a://b/out"]
    proc = subprocess.run([helm, "template", "featurizer", str(CHART), *defaults, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert where in proc.stderr


# ---- what the manifests promise --------------------------------------------------------------

@pytest.fixture(scope="module", params=["values-kind.yaml", "values-eks.yaml"])
def rendered(request, template) -> list[dict]:
    return template("--values", str(CHART / request.param))


def test_spark_application_fields(rendered):
    spec = only(rendered, "SparkApplication")["spec"]
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    assert spec["sparkVersion"] == pins["pyspark"]
    assert spec["image"].endswith(f"featurizer:{featurizer.__version__}")
    assert spec["imagePullPolicy"] == "IfNotPresent"
    assert spec["mainApplicationFile"] == "local:///opt/featurizer/job/main.py"
    assert spec["restartPolicy"]["type"] == "OnFailure"
    assert spec["restartPolicy"]["onFailureRetries"] >= 1
    assert spec["dynamicAllocation"]["enabled"] and spec["dynamicAllocation"]["shuffleTrackingEnabled"]
    assert spec["timeToLiveSeconds"] > 0
    for conf in ("sparkConf", "hadoopConf"):
        assert all(isinstance(v, str) for v in (spec.get(conf) or {}).values()), conf
        assert not any(re.search(r"secret|access\.key|password", k, re.I)
                       for k in spec.get(conf) or {}), f"credentials inline in {conf}"


def test_pods_are_hardened_and_sized(rendered):
    spec = only(rendered, "SparkApplication")["spec"]
    account = only(rendered, "ServiceAccount")["metadata"]["name"]
    for role in ("driver", "executor"):
        pod = spec[role]
        assert isinstance(pod["cores"], int) and pod["cores"] >= 1
        assert re.fullmatch(r"\d+[kmgt]", pod["memory"]) and re.fullmatch(r"\d+[kmgt]", pod["memoryOverhead"])
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
        {"secretRef": {"name": "featurizer-s3"}}]
    eks = template("--values", str(CHART / "values-eks.yaml"))
    assert "envFrom" not in only(eks, "SparkApplication")["spec"]["driver"]
    annotations = only(eks, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_rbac_is_namespaced_and_minimal(rendered):
    role, binding = only(rendered, "Role"), only(rendered, "RoleBinding")
    assert not [doc for doc in rendered if doc["kind"].startswith("Cluster")]
    assert [(rule["apiGroups"], sorted(rule["resources"])) for rule in role["rules"]] == [
        ([""], ["configmaps", "persistentvolumeclaims", "pods", "services"])]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": "featurizer",
                                    "name": only(rendered, "ServiceAccount")["metadata"]["name"]}]


def test_schedule_renders_the_same_spec_as_a_scheduled_application(template):
    kind = ["--values", str(CHART / "values-kind.yaml")]
    once = only(template(*kind), "SparkApplication")["spec"]
    docs = template(*kind, "--set", "schedule.enabled=true", "--set", "schedule.cron=@hourly")
    assert not [doc for doc in docs if doc["kind"] == "SparkApplication"]
    scheduled = only(docs, "ScheduledSparkApplication")["spec"]
    assert scheduled["schedule"] == "@hourly" and scheduled["template"] == once


def test_checked_in_manifests_are_the_chart_rendered(tmp_path: Path, helm: str):
    subprocess.run(["bash", str(ROOT / "hack" / "k8s.sh"), "render", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    rendered = sorted(path.name for path in tmp_path.iterdir())
    assert rendered == sorted(path.name for path in (ROOT / "k8s").glob("*.yaml"))
    for name in rendered:
        assert (ROOT / "k8s" / name).read_text() == (tmp_path / name).read_text(), (
            f"k8s/{name} is stale: run make k8s-render")


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
    proc = subprocess.run(["bash", str(ROOT / "hack" / "kind.sh"), "operator-template"],
                          capture_output=True, text=True, timeout=600)
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
