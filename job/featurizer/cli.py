"""`featurizer` command line: run, sample-data, and the commands in COMMAND_MODULES.

Imports of Spark and TensorFlow happen inside commands, so `featurizer --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from featurizer import __version__
from featurizer.config import RunConfig
from featurizer.errors import FeaturizerError

# Commands defined in their own modules; each module has `register(subparsers)` and keeps
# heavy imports inside its handlers.
COMMAND_MODULES: tuple[str, ...] = (
    "featurizer.reporting.command",
    "featurizer.launch.emr",
    "featurizer.launch.k8s",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featurizer",
        description="MobileNetV2 embeddings + PCA features for image folders, with Spark.")
    parser.add_argument("--version", action="version", version=f"featurizer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="featurize a folder of images and fit PCA",
                              description="Featurize every image under --input with "
                              "MobileNetV2 and reduce the features with Spark ML PCA.")
    RunConfig.add_arguments(run)
    run.set_defaults(handler=_run)

    sample = commands.add_parser("sample-data", help="write the small synthetic data set")
    sample.add_argument("folder", help="where to write <split>/<class>/<n>_100.jpg")
    sample.add_argument("--scale", type=int, default=1,
                        help="multiply the 100 default images (default 1)")
    sample.set_defaults(handler=_sample_data)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    from featurizer import pipeline, report

    manifest = pipeline.run(RunConfig.from_namespace(args), log=_info)
    print("\nfeaturizer run complete\n" + report.summary_table(manifest))
    return 0


def _sample_data(args: argparse.Namespace) -> int:
    from featurizer import sample_data

    count = sample_data.generate(args.folder, scale=args.scale)
    print(f"wrote {count} images under {args.folder}")
    return 0


def _info(message: str) -> None:
    print(f"featurizer: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except FeaturizerError as exc:
        print(f"featurizer: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
