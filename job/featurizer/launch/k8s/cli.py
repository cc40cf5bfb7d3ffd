"""`featurizer submit k8s` and the Kubernetes side of `status`, `logs`, `cancel`/`delete`."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from featurizer.config import RunConfig
from featurizer.errors import FeaturizerError
from featurizer.launch import submit_targets
from featurizer.launch.k8s.cluster import (
    TERMINAL,
    Cluster,
    api_client,
    app_error,
    app_state,
    driver_pod,
)
from featurizer.launch.k8s.follow import Follower, outcome
from featurizer.launch.k8s.render import (
    DEFAULT_NAMESPACE,
    app_name,
    chart_path,
    helm_binary,
    render,
)


def register(commands: argparse._SubParsersAction) -> None:
    submit = submit_targets(commands).add_parser(
        "k8s",
        help="run the job as a SparkApplication (kubeflow spark-operator)",
        description="Render the SparkApplication with the helm chart (helm/featurizer) from "
        "--values files and the job options below, create it, then follow it: state changes, "
        "the driver log, and an exit code of 0 (COMPLETED), 1 (FAILED) or 3 (still running at "
        "--wait-timeout). The application is named after the output (the same output, the "
        "same name): a finished one of that name is replaced, a running one only with "
        "--replace. Unless --overwrite is given the job runs with --resume (like the chart's "
        "default), so the operator's retries continue the run; a complete output is still "
        "refused.",
    )
    RunConfig.add_arguments(submit.add_argument_group("job options (as for `featurizer run`)"))
    group = submit.add_argument_group("Kubernetes")
    group.add_argument(
        "--name",
        help="SparkApplication name (default: featurizer-<last "
        "folder of --output>-<hash of --output>, printed at submit)",
    )
    group.add_argument(
        "--replace",
        action="store_true",
        help="replace an application of the same name even while it runs "
        "(its run stops; its output's lease then lets the new one --resume)",
    )
    group.add_argument(
        "--values",
        "-f",
        action="append",
        default=[],
        metavar="FILE",
        help="chart values file for image, resources, S3 and service account, "
        "e.g. helm/featurizer/values-kind.yaml (repeatable); their `job` "
        "section is ignored: the options above decide",
    )
    group.add_argument(
        "--chart",
        help="chart directory (default: the chart installed with featurizer, or FEATURIZER_CHART)",
    )
    group.add_argument("--helm", help="helm binary (default: FEATURIZER_HELM or helm on PATH)")
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="print the SparkApplication and exit; no cluster needed",
    )
    wait_options(group, default_wait=True)
    cluster_options(group)
    submit.set_defaults(handler=_submit)


def _resolve_name(args: argparse.Namespace, cluster: Cluster) -> str:
    if args.name:
        return args.name
    return app_name(args.output) if args.output else cluster.latest()


def cluster_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--namespace",
        "-n",
        default=DEFAULT_NAMESPACE,
        help=f"namespace (default {DEFAULT_NAMESPACE})",
    )
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, "
        "~/.kube/config, or the pod's service account in a cluster)",
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def wait_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default_wait: bool
) -> None:
    if default_wait:
        parser.add_argument(
            "--no-wait",
            dest="wait",
            action="store_false",
            help="return once the application is created",
        )
    else:
        parser.add_argument(
            "--wait", action="store_true", help="follow the application until COMPLETED or FAILED"
        )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=6 * 3600,
        metavar="SECONDS",
        help="give up waiting after this long (exit 3; default 6 h)",
    )
    parser.add_argument(
        "--no-logs",
        dest="logs",
        action="store_false",
        help="do not stream the driver log while waiting",
    )


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(api_client(args.kubeconfig, args.context), args.namespace)


def _follow(cluster: Cluster, name: str, args: argparse.Namespace) -> int:
    follower = Follower(cluster, logs=args.logs)
    try:
        app = cluster.wait(name, args.wait_timeout, follower)
    except KeyboardInterrupt:
        raise FeaturizerError(
            f"interrupted; SparkApplication {name} keeps running "
            f"(`featurizer status {name} -n {cluster.namespace} --wait`)"
        ) from None
    follower.finish()
    return outcome(app, cluster.namespace, cluster)


def _submit(args: argparse.Namespace) -> int:
    import yaml

    config = RunConfig.from_namespace(args)
    if not config.overwrite:  # retries of the driver must continue, not refuse
        config = dataclasses.replace(config, resume=True)
    name = args.name or app_name(config.output)
    chart = chart_path(args.chart)
    app = render(
        config,
        name=name,
        namespace=args.namespace,
        values_files=args.values,
        chart=chart,
        helm=helm_binary(args.helm),
    )
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(app, sort_keys=False))
        return 0
    cluster = _cluster(args)
    cluster.submit(app, replace=args.replace)
    _info(
        f"created SparkApplication {name} in namespace {args.namespace} ({cluster.server}); "
        f"follow it with `featurizer status {name} -n {args.namespace} --wait`"
    )
    return _follow(cluster, name, args) if args.wait else 0


def status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    name = _resolve_name(args, cluster)
    if args.wait:
        return _follow(cluster, name, args)
    app = cluster.get(name)
    status = app.get("status") or {}
    print(
        f"{name}\t{app_state(app)}\tattempts={status.get('executionAttempts', 0)}"
        f"\tdriver={driver_pod(app)}\t{app_error(app)}".rstrip()
    )
    return outcome(app, args.namespace, cluster) if app_state(app) in TERMINAL else 0


def logs(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    for text in cluster.log(
        driver_pod(cluster.get(_resolve_name(args, cluster))), args.follow, args.tail
    ):
        sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def delete(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    name = _resolve_name(args, cluster)
    cluster.delete(name)
    print(
        f"deleted SparkApplication {name} (namespace {args.namespace}); the operator "
        f"removes its driver and executor pods"
    )
    return 0


def _info(message: str) -> None:
    print(f"featurizer: {message}", file=sys.stderr, flush=True)
