"""Launchers: run the job on a cluster (`featurizer submit k8s`, `featurizer submit emr`, ...).

Each launcher module adds its target to the one `submit` command with `submit_targets()`.
"""

from __future__ import annotations

import argparse

_TARGETS = "_featurizer_submit_targets"
# The containers Spark names in its driver and executor pods (on every Kubernetes cluster,
# EMR on EKS's too): logs are read from, and pod templates patch, these.
DRIVER_CONTAINER = "spark-kubernetes-driver"
EXECUTOR_CONTAINER = "spark-kubernetes-executor"


def submit_targets(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subcommands of `featurizer submit`, created by whichever launcher asks first.

    `commands` is the top-level subparsers object handed to a command module's register()."""
    submit = commands.choices.get("submit")
    if submit is None:
        submit = commands.add_parser(
            "submit",
            help="run the job on a cluster (Kubernetes, EMR on EKS)",
            description="Run `featurizer run` with the same options on a cluster.",
        )
    targets = getattr(submit, _TARGETS, None)
    if targets is None:
        targets = submit.add_subparsers(dest="target", required=True, metavar="TARGET")
        setattr(submit, _TARGETS, targets)
    return targets
