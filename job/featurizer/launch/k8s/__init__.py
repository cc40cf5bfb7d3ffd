"""The job as a kubeflow spark-operator SparkApplication: `featurizer submit k8s`, and the
Kubernetes side of `status`, `logs`, `cancel`/`delete` (launch/runs.py).

  render.py   the SparkApplication for a RunConfig, rendered by the helm chart (no cluster)
  cluster.py  the kubernetes client: create, find, wait, logs; API errors as one line
  follow.py   state changes and the driver's log while waiting; the exit code at the end
  cli.py      the commands
"""

from featurizer.launch.k8s.cli import cluster_options, delete, logs, register, status, wait_options
from featurizer.launch.k8s.cluster import (
    CRD,
    GROUP,
    KIND,
    PLURAL,
    TERMINAL,
    VERSION,
    Cluster,
    WaitTimeout,
    api_client,
    api_status,
    app_error,
    app_state,
    crd_missing,
    driver_pod,
    explain,
    replacement,
)
from featurizer.launch.k8s.follow import ApplicationFailed, Follower, job_error, outcome
from featurizer.launch.k8s.render import (
    DEFAULT_NAMESPACE,
    app_name,
    camel,
    chart_path,
    check_arguments,
    helm_binary,
    helm_template,
    job_values,
    render,
)

__all__ = [
    "CRD",
    "DEFAULT_NAMESPACE",
    "GROUP",
    "KIND",
    "PLURAL",
    "TERMINAL",
    "VERSION",
    "ApplicationFailed",
    "Cluster",
    "Follower",
    "WaitTimeout",
    "api_client",
    "api_status",
    "app_error",
    "app_name",
    "app_state",
    "camel",
    "chart_path",
    "check_arguments",
    "cluster_options",
    "crd_missing",
    "delete",
    "driver_pod",
    "explain",
    "helm_binary",
    "helm_template",
    "job_error",
    "job_values",
    "logs",
    "outcome",
    "register",
    "render",
    "replacement",
    "status",
    "wait_options",
]
