"""`featurizer submit k8s`, `status`, `logs`, `delete`: the job as a spark-operator SparkApplication.

The SparkApplication comes from the helm chart (helm/featurizer), rendered by `helm template`
with values derived from a RunConfig - the template `helm install` and k8s/ use too - and is
created with the kubernetes client's CustomObjectsApi. Cluster operations go through a
`Cluster` built on any kubernetes ApiClient (kubeconfig, context, or in-cluster).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurizer.config import RunConfig
from featurizer.errors import ConfigError, FeaturizerError
from featurizer.launch import DRIVER_CONTAINER, submit_targets

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL, KIND = "sparkoperator.k8s.io", "v1beta2", "sparkapplications", "SparkApplication"
CRD = f"{PLURAL}.{GROUP}/{VERSION}"
TEMPLATE = "templates/sparkapplication.yaml"
TERMINAL = ("COMPLETED", "FAILED")
DEFAULT_NAMESPACE = "featurizer"
APP_LABEL = "app.kubernetes.io/name=featurizer"     # the chart's label on every application
NAME_LENGTH = 50                                     # the chart's fullnameOverride maximum
REPO = Path(__file__).resolve().parents[3]
REQUEST_TIMEOUT = 30  # seconds for one API call (watches and log streams set their own)
WATCH_SECONDS = 300   # one watch request; the wait re-reads the object between requests


class ApplicationFailed(FeaturizerError):
    exit_code = 1


class WaitTimeout(FeaturizerError):
    exit_code = 3


# ---- rendering (no cluster) ---------------------------------------------------------------

def camel(name: str) -> str:
    """RunConfig field -> chart value key (pca_k -> pcaK); the chart maps it back to --pca-k."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def job_values(config: RunConfig) -> dict[str, Any]:
    """The chart's `job` values for a RunConfig: every option, null where the job's default
    applies. Nulls also clear options a --values file set: the RunConfig alone decides."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("action") == "append":
            values[camel(f.name)] = list(value)
        else:
            values[camel(f.name)] = None if value == f.default else value
    return values


def app_name(output: str) -> str:
    """The default SparkApplication name for an output: featurizer-<last folder>-<hash>.
    The same output always gets the same name, so a second submit finds the first run (and
    refuses to replace it while it runs); different outputs never share one."""
    from featurizer import storage

    uri = storage.normalize(output)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:8]
    last = re.sub(r"[^a-z0-9]+", "-", uri.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-")
    stem = f"featurizer-{last}"[:NAME_LENGTH - len(digest) - 1].rstrip("-")
    return f"{stem}-{digest}"


def replacement(existing: dict[str, Any] | None, replace: bool) -> str:
    """What submitting does about an application of the same name: "create" (there is none),
    "recreate" (it has finished, or --replace), or a ConfigError while it is still going."""
    if existing is None:
        return "create"
    state = app_state(existing)
    if state in TERMINAL or replace:
        return "recreate"
    name = existing["metadata"]["name"]
    since = existing["metadata"].get("creationTimestamp", "?")
    namespace = existing["metadata"].get("namespace", DEFAULT_NAMESPACE)
    raise ConfigError(f"SparkApplication {name} is {state} (created {since}) and is not "
                      f"replaced: follow it with `featurizer status {name} -n {namespace} "
                      f"--wait`, or pass --replace to stop it and start over")


def chart_path(explicit: str | None = None) -> Path:
    """--chart, else FEATURIZER_CHART, else helm/featurizer of the checkout we run from."""
    chart = Path(explicit or os.environ.get("FEATURIZER_CHART") or REPO / "helm" / "featurizer")
    if not (chart / "Chart.yaml").is_file():
        raise ConfigError(f"helm chart not found at {chart}: pass --chart DIR (helm/featurizer "
                          f"of a featurizer checkout) or set FEATURIZER_CHART")
    return chart


def helm_binary(explicit: str | None = None) -> str:
    """--helm, else FEATURIZER_HELM, else helm on PATH, else the checkout's pinned build."""
    chosen = explicit or os.environ.get("FEATURIZER_HELM") or shutil.which("helm")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise ConfigError(f"helm binary {chosen} is not executable: fix --helm/FEATURIZER_HELM")
        return chosen
    tools = REPO / "hack" / "tools.sh"
    if tools.is_file():
        proc = subprocess.run(["bash", str(tools), "helm"], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.strip()
    raise ConfigError("helm not found: install helm 3, or set FEATURIZER_HELM to its path")


def helm_template(chart: Path, helm: str, *, release: str, namespace: str,
                  values_files: Sequence[str | Path] = (), extra_values: dict | None = None,
                  show_only: str | None = None) -> str:
    """`helm template` output; one-line ConfigError if helm rejects the values."""
    import yaml

    for path in values_files:
        if not Path(path).is_file():
            raise ConfigError(f"values file {path} not found")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="featurizer-values-") as extra:
        yaml.safe_dump(extra_values or {}, extra)
        extra.flush()
        cmd = [helm, "template", release, str(chart), "--namespace", namespace]
        for path in [*values_files, extra.name]:
            cmd += ["--values", str(path)]
        cmd += ["--show-only", show_only] if show_only else []
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        message = " ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
        raise ConfigError(f"helm template {chart}: {message.removeprefix('Error: ')}")
    return proc.stdout


def render(config: RunConfig, *, name: str, namespace: str = DEFAULT_NAMESPACE,
           values_files: Sequence[str | Path] = (), chart: Path | None = None,
           helm: str | None = None) -> dict[str, Any]:
    """The SparkApplication for `config`, rendered by the chart (values files, then the job)."""
    import yaml

    overrides = {"fullnameOverride": name, "schedule": {"enabled": False},
                 "job": job_values(config)}
    text = helm_template(chart or chart_path(), helm or helm_binary(), release=name,
                         namespace=namespace, values_files=values_files,
                         extra_values=overrides, show_only=TEMPLATE)
    app = yaml.safe_load(text)
    check_arguments(app, config)
    return app


def check_arguments(app: dict[str, Any], config: RunConfig) -> None:
    """The rendered arguments must parse back to exactly `config` (chart and job in step)."""
    argv = [str(arg) for arg in app["spec"].get("arguments") or []]
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage text: not ours
            parsed = RunConfig.from_argv(argv)
    except (SystemExit, ConfigError):
        parsed = None
    if parsed != config:
        raise ConfigError(f"the chart rendered arguments {argv} that do not match the options "
                          f"given: the chart and this featurizer ({config.__module__}) differ, "
                          f"use the chart of the same version")


# ---- the cluster ----------------------------------------------------------------------------

def api_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """A client for --kubeconfig/--context (default $KUBECONFIG or ~/.kube/config), or for the
    pod's service account when running in a cluster without a kubeconfig."""
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    default = os.environ.get("KUBECONFIG") or "~/.kube/config"
    paths = [os.path.expanduser(p) for p in (kubeconfig or default).split(os.pathsep) if p]
    found = [p for p in paths if os.path.isfile(p)]
    if not found and not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    where = os.pathsep.join(paths)
    if not found:
        raise ConfigError(f"kubeconfig {where} not found: pass --kubeconfig FILE or set KUBECONFIG")
    for path in found:
        _check_kubeconfig(path)
    try:
        return config.new_client_from_config(config_file=os.pathsep.join(found), context=context,
                                             persist_config=False)
    except (ConfigException, yaml.YAMLError, TypeError, KeyError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot use kubeconfig {where}"
                          f"{f' context {context}' if context else ''}: {reason}") from None


def _check_kubeconfig(path: str) -> None:
    """Say which file is broken, rather than how the client tripped over it."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(f"cannot read kubeconfig {path}: {reason}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} is not a kubeconfig (a YAML mapping with clusters, users, "
                          f"contexts): pass --kubeconfig FILE or set KUBECONFIG")


def explain(exc: ApiException, action: str, server: str, namespace: str) -> FeaturizerError:
    """An API error as one line that says what to do."""
    body = api_status(exc)
    message = body.get("message") or (exc.reason or "").strip()
    details = body.get("details") or {}
    if exc.status == 401:
        return ConfigError(f"{action}: the API server at {server} rejected the kubeconfig's "
                           f"credentials (401 Unauthorized): log in to the cluster again")
    if exc.status == 403:
        return ConfigError(f"{action}: forbidden by RBAC: {message}; ask for a Role in "
                           f"namespace {namespace} that allows it")
    if exc.status == 404 and details.get("name"):
        kind = details.get("kind") or "object"
        where = "" if kind == "namespaces" else f" in namespace {namespace}"
        return FeaturizerError(f"{action}: {kind} {details['name']!r} not found{where}")
    if exc.status == 404:
        return crd_missing(server)
    if exc.status == 422:
        return ConfigError(f"{action}: the API server rejected the SparkApplication: {message}")
    return FeaturizerError(f"{action}: the API server at {server} answered {exc.status} "
                           f"{exc.reason}: {message}")


def api_status(exc: ApiException) -> dict[str, Any]:
    """The Status object of an API error ({} when the body is not one, e.g. `404 page not
    found` for an API group the server does not serve)."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def crd_missing(server: str) -> ConfigError:
    return ConfigError(f"the SparkApplication CRD ({CRD}) is not installed on {server}: install "
                       f"the kubeflow spark-operator (make operator-install, or its helm chart)")


def app_state(app: dict[str, Any]) -> str:
    return ((app.get("status") or {}).get("applicationState") or {}).get("state") or "NEW"


def app_error(app: dict[str, Any]) -> str:
    return ((app.get("status") or {}).get("applicationState") or {}).get("errorMessage") or ""


def driver_pod(app: dict[str, Any]) -> str:
    """The driver pod's name: from the status, else Spark's default <name>-driver."""
    status_pod = ((app.get("status") or {}).get("driverInfo") or {}).get("podName")
    spec_pod = ((app.get("spec") or {}).get("driver") or {}).get("podName")
    return status_pod or spec_pod or f"{app['metadata']['name']}-driver"


class Cluster:
    """SparkApplications in one namespace of one API server."""

    def __init__(self, api: ApiClient, namespace: str = DEFAULT_NAMESPACE) -> None:
        from kubernetes import client

        self.api = api
        self.namespace = namespace
        self.server = api.configuration.host
        # Any: the client's generated annotations say `object` for custom objects and `str`
        # for a log read with _preload_content=False (a urllib3 response).
        self.custom: Any = client.CustomObjectsApi(api)
        self.core: Any = client.CoreV1Api(api)

    @contextlib.contextmanager
    def calls(self, action: str) -> Iterator[None]:
        """Turn client errors inside the block into one-line FeaturizerErrors."""
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ApiException as exc:
            raise explain(exc, action, self.server, self.namespace) from None
        except HTTPError as exc:
            reason = str(getattr(exc, "reason", None) or exc)
            reason = reason.split("Failed to establish a new connection: ")[-1]
            raise ConfigError(f"cannot reach the Kubernetes API server at {self.server} "
                              f"({reason}): is the cluster up and the kubeconfig context the "
                              f"right one?") from None

    def ensure_crd(self) -> None:
        """Fail with a clear message unless the API server serves SparkApplications."""
        from kubernetes.client.rest import ApiException

        with self.calls("checking the SparkApplication CRD"):
            try:
                served = self.custom.get_api_resources(GROUP, VERSION,
                                                       _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if exc.status == 404:
                    raise crd_missing(self.server) from None
                raise
        if not any(resource.name == PLURAL for resource in served.resources or []):
            raise crd_missing(self.server)

    def get(self, name: str) -> dict[str, Any]:
        with self.calls(f"reading SparkApplication {name}"):
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT)

    def find(self, name: str) -> dict[str, Any] | None:
        """The application, or None if there is none of that name."""
        from kubernetes.client.rest import ApiException

        with self.calls(f"reading SparkApplication {name}"):
            try:
                return self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name,
                    _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if exc.status == 404 and (api_status(exc).get("details") or {}).get("name") == name:
                    return None
                raise

    def latest(self) -> str:
        """The name of the most recently created featurizer application in the namespace."""
        with self.calls("listing SparkApplications"):
            apps = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, label_selector=APP_LABEL,
                _request_timeout=REQUEST_TIMEOUT).get("items") or []
        if not apps:
            raise ConfigError(f"no featurizer SparkApplication in namespace {self.namespace}: "
                              f"name one, or pass the run's --output")
        newest = max(apps, key=lambda app: app["metadata"].get("creationTimestamp") or "")
        return newest["metadata"]["name"]

    def submit(self, app: dict[str, Any], replace: bool = False,
               timeout: float = 120) -> dict[str, Any]:
        """Create `app`. A finished application of the same name is deleted first and its
        removal awaited, so every submission is a fresh run (replacing an unchanged spec would
        not make the operator run it again); a running one only with `replace`."""
        name = app["metadata"]["name"]
        self.ensure_crd()
        self._check_service_account(app)
        if replacement(self.find(name), replace) == "recreate":
            self.delete(name, missing_ok=True)
            self._wait_gone(name, timeout)
        with self.calls(f"creating SparkApplication {name}"):
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, app, _request_timeout=REQUEST_TIMEOUT)

    def delete(self, name: str, missing_ok: bool = False) -> bool:
        """Delete the application (the operator's pods go with it); False if there was none."""
        from kubernetes.client.rest import ApiException

        with self.calls(f"deleting SparkApplication {name}"):
            try:
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name,
                    propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if missing_ok and exc.status == 404 and (
                        api_status(exc).get("details") or {}).get("name") == name:
                    return False
                raise
        return True

    def wait(self, name: str, timeout: float,
             on_update: Callable[[dict[str, Any]], None] = lambda app: None) -> dict[str, Any]:
        """Watch the application until COMPLETED or FAILED; on_update sees each new version."""
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        deadline = time.monotonic() + timeout
        while True:
            app = self.get(name)
            on_update(app)
            if app_state(app) in TERMINAL:
                return app
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"SparkApplication {name} still {app_state(app)} after "
                                  f"{timeout:.0f} s; it keeps running: `featurizer status "
                                  f"{name} -n {self.namespace} --wait`")
            seconds = max(1, int(min(remaining, WATCH_SECONDS)))
            with self.calls(f"watching SparkApplication {name}"):
                try:
                    for event in watch.Watch().stream(
                            self.custom.list_namespaced_custom_object, GROUP, VERSION,
                            self.namespace, PLURAL, field_selector=f"metadata.name={name}",
                            resource_version=app["metadata"]["resourceVersion"],
                            timeout_seconds=seconds, _request_timeout=seconds + REQUEST_TIMEOUT):
                        if event["type"] == "DELETED":
                            raise FeaturizerError(f"SparkApplication {name} was deleted while "
                                                  f"waiting for it")
                        on_update(event["object"])
                        if app_state(event["object"]) in TERMINAL:
                            return event["object"]
                except ApiException as exc:
                    if exc.status != 410:  # 410 Gone: our resourceVersion expired; read again
                        raise

    def log(self, pod: str, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """The driver container's log as text chunks (streamed while the pod runs if follow)."""
        with self.calls(f"reading the log of pod {pod}"):
            response = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=DRIVER_CONTAINER, follow=follow, tail_lines=tail,
                _preload_content=False, _request_timeout=None if follow else REQUEST_TIMEOUT)
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            try:
                for chunk in response.stream(64 * 1024):
                    yield decoder.decode(chunk)
                yield decoder.decode(b"", final=True)
            finally:
                response.release_conn()

    def _check_service_account(self, app: dict[str, Any]) -> None:
        """A missing service account fails only later, in the operator; say it now."""
        from kubernetes.client.rest import ApiException

        account = app["spec"]["driver"].get("serviceAccount")
        if not account:
            return
        try:
            self.core.read_namespaced_service_account(account, self.namespace,
                                                      _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                raise ConfigError(
                    f"service account {account!r} not found in namespace {self.namespace}: "
                    f"install the chart's RBAC first (helm install, or kubectl apply -f k8s/)"
                ) from None
            # 403: we may not read service accounts; the operator will tell if it is missing.

    def _wait_gone(self, name: str, timeout: float) -> None:
        from kubernetes.client.rest import ApiException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                         name, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(1)
        raise WaitTimeout(f"the earlier SparkApplication {name} was not deleted within "
                          f"{timeout:.0f} s; delete it with `featurizer delete {name}`")


# ---- following a run ------------------------------------------------------------------------

class Follower:
    """Reports state changes and, once the driver runs, streams its log to stdout."""

    def __init__(self, cluster: Cluster, logs: bool = True) -> None:
        self.cluster = cluster
        self.logs = logs
        self.state: str | None = None
        self.threads: dict[str, threading.Thread] = {}

    def __call__(self, app: dict[str, Any]) -> None:
        state = app_state(app)
        if state != self.state:
            self.state = state
            error = f": {app_error(app)}" if app_error(app) else ""
            _info(f"SparkApplication {app['metadata']['name']} {state}{error}")
        pod = driver_pod(app)
        if self.logs and state == "RUNNING" and pod not in self.threads:
            # A retry runs a new driver pod (<name>-driver again after the old one is gone).
            self.threads = {p: t for p, t in self.threads.items() if t.is_alive()}
            thread = threading.Thread(target=self._pump, args=(pod,), daemon=True)
            self.threads[pod] = thread
            thread.start()

    def _pump(self, pod: str) -> None:
        try:
            for text in self.cluster.log(pod, follow=True):
                sys.stdout.write(text)
                sys.stdout.flush()
        except Exception as exc:  # the log is a courtesy: the state decides the outcome
            _info(f"driver log of {pod} unavailable: {exc}")

    def finish(self, seconds: float = 15) -> None:
        """Let the log streams of finished drivers drain."""
        deadline = time.monotonic() + seconds
        for thread in self.threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))


def outcome(app: dict[str, Any], namespace: str, cluster: Cluster | None = None) -> int:
    """Exit code for a finished application: 0 COMPLETED, else ApplicationFailed whose
    message leads with the job's own one-line error when the driver log has one."""
    name, state = app["metadata"]["name"], app_state(app)
    if state == "FAILED":
        reasons = [job_error(cluster, app) if cluster else None, app_error(app)]
        error = "; ".join(r for r in reasons if r) or "see its driver log"
        raise ApplicationFailed(f"SparkApplication {name} FAILED: {error} "
                                f"(`featurizer logs {name} -n {namespace}`)")
    return 0


def job_error(cluster: Cluster, app: dict[str, Any]) -> str | None:
    """The last `featurizer: error:` line of the driver log (what the job itself said)."""
    prefix = "featurizer: error:"
    try:
        text = "".join(cluster.log(driver_pod(app), follow=False, tail=200))
    except Exception:  # the pod may be gone already: the operator's message still stands
        return None
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):].strip() if lines else None


# ---- command line ---------------------------------------------------------------------------

def register(commands: argparse._SubParsersAction) -> None:
    submit = submit_targets(commands).add_parser(
        "k8s", help="run the job as a SparkApplication (kubeflow spark-operator)",
        description="Render the SparkApplication with the helm chart (helm/featurizer) from "
        "--values files and the job options below, create it, then follow it: state changes, "
        "the driver log, and an exit code of 0 (COMPLETED), 1 (FAILED) or 3 (still running at "
        "--wait-timeout). The application is named after the output (the same output, the "
        "same name): a finished one of that name is replaced, a running one only with "
        "--replace. Unless --overwrite is given the job runs with --resume (like the chart's "
        "default), so the operator's retries continue the run; a complete output is still "
        "refused.")
    RunConfig.add_arguments(submit.add_argument_group("job options (as for `featurizer run`)"))
    group = submit.add_argument_group("Kubernetes")
    group.add_argument("--name", help="SparkApplication name (default: featurizer-<last "
                       "folder of --output>-<hash of --output>, printed at submit)")
    group.add_argument("--replace", action="store_true",
                       help="replace an application of the same name even while it runs "
                       "(its run stops; its output's lease then lets the new one --resume)")
    group.add_argument("--values", "-f", action="append", default=[], metavar="FILE",
                       help="chart values file for image, resources, S3 and service account, "
                       "e.g. helm/featurizer/values-kind.yaml (repeatable); their `job` "
                       "section is ignored: the options above decide")
    group.add_argument("--chart", help="chart directory (default: helm/featurizer of this "
                       "checkout, or FEATURIZER_CHART)")
    group.add_argument("--helm", help="helm binary (default: FEATURIZER_HELM or helm on PATH)")
    group.add_argument("--dry-run", action="store_true",
                       help="print the SparkApplication and exit; no cluster needed")
    wait_options(group, default_wait=True)
    cluster_options(group)
    submit.set_defaults(handler=_submit)


def _resolve_name(args: argparse.Namespace, cluster: Cluster) -> str:
    if args.name:
        return args.name
    return app_name(args.output) if args.output else cluster.latest()


def cluster_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--namespace", "-n", default=DEFAULT_NAMESPACE,
                        help=f"namespace (default {DEFAULT_NAMESPACE})")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, "
                        "~/.kube/config, or the pod's service account in a cluster)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def wait_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                 default_wait: bool) -> None:
    if default_wait:
        parser.add_argument("--no-wait", dest="wait", action="store_false",
                            help="return once the application is created")
    else:
        parser.add_argument("--wait", action="store_true",
                            help="follow the application until COMPLETED or FAILED")
    parser.add_argument("--wait-timeout", type=float, default=6 * 3600, metavar="SECONDS",
                        help="give up waiting after this long (exit 3; default 6 h)")
    parser.add_argument("--no-logs", dest="logs", action="store_false",
                        help="do not stream the driver log while waiting")


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(api_client(args.kubeconfig, args.context), args.namespace)


def _follow(cluster: Cluster, name: str, args: argparse.Namespace) -> int:
    follower = Follower(cluster, logs=args.logs)
    try:
        app = cluster.wait(name, args.wait_timeout, follower)
    except KeyboardInterrupt:
        raise FeaturizerError(f"interrupted; SparkApplication {name} keeps running "
                              f"(`featurizer status {name} -n {cluster.namespace} --wait`)"
                              ) from None
    follower.finish()
    return outcome(app, cluster.namespace, cluster)


def _submit(args: argparse.Namespace) -> int:
    import yaml

    config = RunConfig.from_namespace(args)
    if not config.overwrite:            # retries of the driver must continue, not refuse
        config = dataclasses.replace(config, resume=True)
    name = args.name or app_name(config.output)
    chart = chart_path(args.chart)
    app = render(config, name=name, namespace=args.namespace, values_files=args.values,
                 chart=chart, helm=helm_binary(args.helm))
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(app, sort_keys=False))
        return 0
    cluster = _cluster(args)
    cluster.submit(app, replace=args.replace)
    _info(f"created SparkApplication {name} in namespace {args.namespace} ({cluster.server}); "
          f"follow it with `featurizer status {name} -n {args.namespace} --wait`")
    return _follow(cluster, name, args) if args.wait else 0


def status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    name = _resolve_name(args, cluster)
    if args.wait:
        return _follow(cluster, name, args)
    app = cluster.get(name)
    status = app.get("status") or {}
    print(f"{name}\t{app_state(app)}\tattempts={status.get('executionAttempts', 0)}"
          f"\tdriver={driver_pod(app)}\t{app_error(app)}".rstrip())
    return outcome(app, args.namespace, cluster) if app_state(app) in TERMINAL else 0


def logs(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    for text in cluster.log(driver_pod(cluster.get(_resolve_name(args, cluster))), args.follow,
                            args.tail):
        sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def delete(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    name = _resolve_name(args, cluster)
    cluster.delete(name)
    print(f"deleted SparkApplication {name} (namespace {args.namespace}); the operator "
          f"removes its driver and executor pods")
    return 0


def _info(message: str) -> None:
    print(f"featurizer: {message}", file=sys.stderr, flush=True)
