"""SparkApplications on a cluster: the kubernetes client, its errors as one-line messages.

Cluster operations go through a `Cluster` built on any kubernetes ApiClient (kubeconfig,
context, or in-cluster), in one namespace.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurizer.errors import ConfigError, FeaturizerError
from featurizer.launch import DRIVER_CONTAINER
from featurizer.launch.k8s.render import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from kubernetes.client.rest import ApiException

GROUP, VERSION = "sparkoperator.k8s.io", "v1beta2"
PLURAL, KIND = "sparkapplications", "SparkApplication"
CRD = f"{PLURAL}.{GROUP}/{VERSION}"
TERMINAL = ("COMPLETED", "FAILED")
APP_LABEL = "app.kubernetes.io/name=featurizer"  # the chart's label on every application
REQUEST_TIMEOUT = 30  # seconds for one API call (watches and log streams set their own)
WATCH_SECONDS = 300  # one watch request; the wait re-reads the object between requests


class WaitTimeout(FeaturizerError):
    exit_code = 3


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
        return config.new_client_from_config(
            config_file=os.pathsep.join(found), context=context, persist_config=False
        )
    except (ConfigException, yaml.YAMLError, TypeError, KeyError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot use kubeconfig {where}{f' context {context}' if context else ''}: {reason}"
        ) from None


def _check_kubeconfig(path: str) -> None:
    """Say which file is broken, rather than how the client tripped over it."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(f"cannot read kubeconfig {path}: {reason}") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path} is not a kubeconfig (a YAML mapping with clusters, users, "
            f"contexts): pass --kubeconfig FILE or set KUBECONFIG"
        )


def explain(exc: ApiException, action: str, server: str, namespace: str) -> FeaturizerError:
    """An API error as one line that says what to do."""
    body = api_status(exc)
    message = body.get("message") or (exc.reason or "").strip()
    details = body.get("details") or {}
    if exc.status == 401:
        return ConfigError(
            f"{action}: the API server at {server} rejected the kubeconfig's "
            f"credentials (401 Unauthorized): log in to the cluster again"
        )
    if exc.status == 403:
        return ConfigError(
            f"{action}: forbidden by RBAC: {message}; ask for a Role in "
            f"namespace {namespace} that allows it"
        )
    if exc.status == 404 and details.get("name"):
        kind = details.get("kind") or "object"
        where = "" if kind == "namespaces" else f" in namespace {namespace}"
        return FeaturizerError(f"{action}: {kind} {details['name']!r} not found{where}")
    if exc.status == 404:
        return crd_missing(server)
    if exc.status == 422:
        return ConfigError(f"{action}: the API server rejected the SparkApplication: {message}")
    return FeaturizerError(
        f"{action}: the API server at {server} answered {exc.status} {exc.reason}: {message}"
    )


def api_status(exc: ApiException) -> dict[str, Any]:
    """The Status object of an API error ({} when the body is not one, e.g. `404 page not
    found` for an API group the server does not serve)."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def crd_missing(server: str) -> ConfigError:
    return ConfigError(
        f"the SparkApplication CRD ({CRD}) is not installed on {server}: install "
        f"the kubeflow spark-operator (make operator-install, or its helm chart)"
    )


def app_state(app: dict[str, Any]) -> str:
    return ((app.get("status") or {}).get("applicationState") or {}).get("state") or "NEW"


def app_error(app: dict[str, Any]) -> str:
    return ((app.get("status") or {}).get("applicationState") or {}).get("errorMessage") or ""


def driver_pod(app: dict[str, Any]) -> str:
    """The driver pod's name: from the status, else Spark's default <name>-driver."""
    status_pod = ((app.get("status") or {}).get("driverInfo") or {}).get("podName")
    spec_pod = ((app.get("spec") or {}).get("driver") or {}).get("podName")
    return status_pod or spec_pod or f"{app['metadata']['name']}-driver"


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
    raise ConfigError(
        f"SparkApplication {name} is {state} (created {since}) and is not "
        f"replaced: follow it with `featurizer status {name} -n {namespace} "
        f"--wait`, or pass --replace to stop it and start over"
    )


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
            raise ConfigError(
                f"cannot reach the Kubernetes API server at {self.server} "
                f"({reason}): is the cluster up and the kubeconfig context the "
                f"right one?"
            ) from None

    def ensure_crd(self) -> None:
        """Fail with a clear message unless the API server serves SparkApplications."""
        from kubernetes.client.rest import ApiException

        with self.calls("checking the SparkApplication CRD"):
            try:
                served = self.custom.get_api_resources(
                    GROUP, VERSION, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404:
                    raise crd_missing(self.server) from None
                raise
        if not any(resource.name == PLURAL for resource in served.resources or []):
            raise crd_missing(self.server)

    def get(self, name: str) -> dict[str, Any]:
        with self.calls(f"reading SparkApplication {name}"):
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )

    def find(self, name: str) -> dict[str, Any] | None:
        """The application, or None if there is none of that name."""
        from kubernetes.client.rest import ApiException

        with self.calls(f"reading SparkApplication {name}"):
            try:
                return self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404 and (api_status(exc).get("details") or {}).get("name") == name:
                    return None
                raise

    def latest(self) -> str:
        """The name of the most recently created featurizer application in the namespace."""
        with self.calls("listing SparkApplications"):
            apps = (
                self.custom.list_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    label_selector=APP_LABEL,
                    _request_timeout=REQUEST_TIMEOUT,
                ).get("items")
                or []
            )
        if not apps:
            raise ConfigError(
                f"no featurizer SparkApplication in namespace {self.namespace}: "
                f"name one, or pass the run's --output"
            )
        newest = max(apps, key=lambda app: app["metadata"].get("creationTimestamp") or "")
        return newest["metadata"]["name"]

    def submit(
        self, app: dict[str, Any], replace: bool = False, timeout: float = 120
    ) -> dict[str, Any]:
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
                GROUP, VERSION, self.namespace, PLURAL, app, _request_timeout=REQUEST_TIMEOUT
            )

    def delete(self, name: str, missing_ok: bool = False) -> bool:
        """Delete the application (the operator's pods go with it); False if there was none."""
        from kubernetes.client.rest import ApiException

        with self.calls(f"deleting SparkApplication {name}"):
            try:
                self.custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    name,
                    propagation_policy="Background",
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except ApiException as exc:
                if (
                    missing_ok
                    and exc.status == 404
                    and (api_status(exc).get("details") or {}).get("name") == name
                ):
                    return False
                raise
        return True

    def wait(
        self,
        name: str,
        timeout: float,
        on_update: Callable[[dict[str, Any]], None] = lambda app: None,
    ) -> dict[str, Any]:
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
                raise WaitTimeout(
                    f"SparkApplication {name} still {app_state(app)} after "
                    f"{timeout:.0f} s; it keeps running: `featurizer status "
                    f"{name} -n {self.namespace} --wait`"
                )
            seconds = max(1, int(min(remaining, WATCH_SECONDS)))
            with self.calls(f"watching SparkApplication {name}"):
                try:
                    for event in watch.Watch().stream(
                        self.custom.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        field_selector=f"metadata.name={name}",
                        resource_version=app["metadata"]["resourceVersion"],
                        timeout_seconds=seconds,
                        _request_timeout=seconds + REQUEST_TIMEOUT,
                    ):
                        if event["type"] == "DELETED":
                            raise FeaturizerError(
                                f"SparkApplication {name} was deleted while waiting for it"
                            )
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
                pod,
                self.namespace,
                container=DRIVER_CONTAINER,
                follow=follow,
                tail_lines=tail,
                _preload_content=False,
                _request_timeout=None if follow else REQUEST_TIMEOUT,
            )
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
            self.core.read_namespaced_service_account(
                account, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
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
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(1)
        raise WaitTimeout(
            f"the earlier SparkApplication {name} was not deleted within "
            f"{timeout:.0f} s; delete it with `featurizer delete {name}`"
        )
