"""`featurizer report OUTPUT [--html FILE] [--json FILE]` (registered in cli.COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write report.json and a self-contained HTML page about a run",
        description="Summarize a run's output folder (local path, s3:// or s3a://): counts and "
        "error reasons, timings, versions, PCA, a linear probe of label quality from `pca` and "
        "`features`, and images per class. Needs no Spark.",
    )
    parser.add_argument("output", metavar="OUTPUT", help="the --output of a featurizer run")
    parser.add_argument(
        "--html",
        metavar="FILE",
        default=None,
        help="where to write the HTML page (default OUTPUT/report.html)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        default=None,
        help="where to write the JSON (default OUTPUT/report.json)",
    )
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from featurizer.reporting import write_report

    written = write_report(None, args.output, html=args.html, json_file=args.json, log=_info)
    probe = written.report["probe"].get("results", {})
    for name, result in probe.items():
        print(f"probe from {name}: test accuracy {result['test_accuracy']:.1%}")
    print(f"wrote {written.html_uri}\nwrote {written.json_uri}")
    return 0


def _info(message: str) -> None:
    print(f"featurizer: {message}", file=sys.stderr, flush=True)
