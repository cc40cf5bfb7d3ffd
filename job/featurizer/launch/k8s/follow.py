"""Following a SparkApplication: state changes, the driver's log, the exit code at its end."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from featurizer.errors import FeaturizerError
from featurizer.launch.k8s.cluster import Cluster, app_error, app_state, driver_pod


class ApplicationFailed(FeaturizerError):
    exit_code = 1


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
        raise ApplicationFailed(
            f"SparkApplication {name} FAILED: {error} (`featurizer logs {name} -n {namespace}`)"
        )
    return 0


def job_error(cluster: Cluster, app: dict[str, Any]) -> str | None:
    """The last `featurizer: error:` line of the driver log (what the job itself said)."""
    prefix = "featurizer: error:"
    try:
        text = "".join(cluster.log(driver_pod(app), follow=False, tail=200))
    except Exception:  # the pod may be gone already: the operator's message still stands
        return None
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix) :].strip() if lines else None


def _info(message: str) -> None:
    print(f"featurizer: {message}", file=sys.stderr, flush=True)
