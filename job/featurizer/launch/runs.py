"""`featurizer status`, `logs`, `cancel`, `delete`: one vocabulary for a submitted run, on
Kubernetes (a SparkApplication, launch/k8s/) or on EMR on EKS (a job run, launch/emr.py).

The run is on EMR when `--virtual-cluster-id` is given (RUN is then the job run id), else
it is a SparkApplication (RUN is its name; default: the one `submit k8s` gave --output, else
the namespace's most recent featurizer application).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def register(commands: argparse._SubParsersAction) -> None:
    from featurizer.launch import k8s  # light: kubernetes and boto3 load in the handlers

    status = commands.add_parser(
        "status",
        help="state of a submitted run; --wait follows it",
        description="Print the run's state, attempts and error; exit 1 if it failed. With "
        "--wait, follow it (state changes and, on Kubernetes, the driver log) until it ends: "
        "exit 0 COMPLETED, 1 FAILED or CANCELLED, 3 still running at --wait-timeout.",
    )
    _run_arguments(status)
    k8s.wait_options(status, default_wait=False)
    status.set_defaults(handler=_dispatch(k8s_handler="status", emr_handler="status"))

    logs = commands.add_parser(
        "logs",
        help="driver log of a submitted run",
        description="The driver's log: the driver container's on Kubernetes, the driver's "
        "stderr and stdout from the run's S3 monitoring logs on EMR on EKS.",
    )
    _run_arguments(logs)
    logs.add_argument(
        "--follow", action="store_true", help="stream while the driver runs (Kubernetes)"
    )
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.set_defaults(handler=_dispatch(k8s_handler="logs", emr_handler="logs"))

    cancel = commands.add_parser(
        "cancel",
        help="stop a submitted run",
        description="EMR on EKS: CancelJobRun. Kubernetes: delete the SparkApplication (its "
        "pods go with it). The output keeps what was staged: submit again to --resume it.",
    )
    _run_arguments(cancel)
    cancel.set_defaults(handler=_dispatch(k8s_handler="delete", emr_handler="cancel"))

    delete = commands.add_parser("delete", help="delete a SparkApplication and its pods")
    _run_arguments(delete)
    delete.set_defaults(handler=_dispatch(k8s_handler="delete", emr_handler=None))


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    from featurizer.launch import k8s

    parser.add_argument(
        "name",
        nargs="?",
        metavar="RUN",
        help="SparkApplication name, or EMR job run id with "
        "--virtual-cluster-id (default on Kubernetes: the application for "
        "--output, else the namespace's most recent featurizer application)",
    )
    kubernetes = parser.add_argument_group("Kubernetes")
    kubernetes.add_argument(
        "--output", metavar="URI", help="find the SparkApplication by the run's --output"
    )
    k8s.cluster_options(kubernetes)
    emr = parser.add_argument_group("EMR on EKS")
    emr.add_argument(
        "--virtual-cluster-id",
        metavar="ID",
        help="the run is an EMR on EKS job run of this virtual cluster",
    )
    emr.add_argument("--region", help="AWS region (default: AWS_REGION / your profile)")
    emr.add_argument(
        "--poll-seconds",
        type=float,
        default=10.0,
        help="first --wait polling interval on EMR; grows to 60 s (default 10)",
    )


def _dispatch(k8s_handler: str, emr_handler: str | None) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from featurizer.errors import ConfigError

        if args.virtual_cluster_id:
            if emr_handler is None:
                raise ConfigError(
                    "delete is for SparkApplications: an EMR job run is "
                    "stopped with `featurizer cancel RUN --virtual-cluster-id ID`"
                )
            if not args.name:
                raise ConfigError(
                    "name the EMR job run: featurizer "
                    f"{args.command} JOB_RUN_ID --virtual-cluster-id ID"
                )
            from featurizer.launch import emr

            return getattr(emr, emr_handler)(args)
        from featurizer.launch import k8s

        return getattr(k8s, k8s_handler)(args)

    return handler
