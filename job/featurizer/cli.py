"""`featurizer` command line: run, sample-data, and the commands in COMMAND_MODULES.

Imports of Spark and TensorFlow happen inside commands, so `featurizer --help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from featurizer import __version__, errors, signals
from featurizer.config import RunConfig
from featurizer.errors import FeaturizerError, Stopped

# Commands defined in their own modules; each module has `register(subparsers)` and keeps
# heavy imports inside its handlers.
COMMAND_MODULES: tuple[str, ...] = (
    "featurizer.reporting.command",
    "featurizer.launch.emr",
    "featurizer.launch.k8s",
    "featurizer.launch.runs",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featurizer",
        description="MobileNetV2 embeddings + PCA features for image folders, with Spark.",
    )
    parser.add_argument("--version", action="version", version=f"featurizer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="featurize a folder of images and fit PCA",
        description="Featurize every image under --input with "
        "MobileNetV2 and reduce the features with Spark ML PCA.",
    )
    RunConfig.add_arguments(run)
    run.add_argument(
        "--verbose",
        action="store_true",
        help="Show Spark's warnings and Python tracebacks on the console (by "
        "default they go to the run's log file, named on failure).",
    )
    run.set_defaults(handler=_run)

    pack = commands.add_parser(
        "pack",
        help="pack a folder tree of images into Parquet shards",
        description="Write every image under INPUT (path, label = parent folder, length, "
        "modificationTime, content), sorted by path, as Parquet files of ~1,000 images (or "
        "~128 MB) into OUTPUT, with a _pack.json saying what they hold. `featurizer run "
        "--input OUTPUT` then reads the shards: the same features and labels as the loose "
        "files, ~1,000x fewer objects to list and GET on S3.",
    )
    pack.add_argument("input", help="folder of images (a path, file://, s3a://)")
    pack.add_argument("output", help="new folder for the shards (a path, file://, s3a://)")
    pack.add_argument(
        "--images-per-file",
        type=int,
        default=1000,
        help="images per Parquet file (default: %(default)s; fewer if they would pass 128 MB)",
    )
    pack.add_argument("--master", help="Spark master URL (default: local[*,3])")
    pack.set_defaults(handler=_pack)

    sample = commands.add_parser("sample-data", help="write the small synthetic data set")
    sample.add_argument("folder", help="where to write <split>/<class>/<n>_100.jpg")
    sample.add_argument(
        "--scale", type=int, default=1, help="multiply the 100 default images (default 1)"
    )
    sample.set_defaults(handler=_sample_data)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    from featurizer import pipeline, report

    if not args.verbose:  # e.g. py4j logs every failed callback
        logging.basicConfig(
            filename=args.log_file,
            level=logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    manifest = pipeline.run(
        RunConfig.from_namespace(args), log=_info, verbose=args.verbose, log_file=args.log_file
    )
    print("\nfeaturizer run complete\n" + report.summary_table(manifest))
    for warning in manifest.get("warnings", []):
        _info(f"warning: {warning}")
    return 0


def _pack(args: argparse.Namespace) -> int:
    from featurizer import local_input, session, sources, storage
    from featurizer.errors import ConfigError

    if args.images_per_file < 1:
        raise ConfigError(f"--images-per-file must be >= 1, got {args.images_per_file}")
    input_uri, output_uri = storage.normalize(args.input), storage.normalize(args.output)
    if storage.is_inside(output_uri, input_uri) or storage.is_inside(input_uri, output_uri):
        raise ConfigError(f"output {output_uri} and input {input_uri} overlap: pack elsewhere")
    local = storage.local_path(input_uri)
    scan = local_input.scan(local) if local else local_input.LocalScan()
    config = RunConfig(input=input_uri, output=output_uri, master=args.master, no_report=True)
    with session.started(config, _info) as spark:
        summary = sources.pack(spark, input_uri, output_uri, scan, args.images_per_file)
    print(
        f"packed {summary['images']:,} images ({summary['bytes'] / 1e6:,.1f} MB) into "
        f"{summary['shards']:,} Parquet files of up to {summary['images_per_file']:,} under "
        f"{output_uri}"
    )
    return 0


def _sample_data(args: argparse.Namespace) -> int:
    from featurizer import sample_data

    count = sample_data.generate(args.folder, scale=args.scale)
    print(f"wrote {count} images under {args.folder}")
    return 0


def _info(message: str) -> None:
    print(f"featurizer: {message}", file=sys.stderr, flush=True)


def _log_file() -> Path:
    """Where this run's full log goes (Spark's warnings and Java traces, Python tracebacks):
    printed with any failure, so the console keeps one line."""
    folder = Path(tempfile.gettempdir()) / "featurizer-logs"
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkstemp(prefix="run-", suffix=".log", dir=folder)[1])


def main(argv: Sequence[str] | None = None) -> int:
    """One error path for every command: the innermost cause in one line, exit 2 for a
    configuration mistake, 1 for a failed run, 128 + N for signal N (130 SIGINT, 143
    SIGTERM); the trace goes to the log file (or the console with --verbose)."""
    args = _parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    args.log_file = None
    if args.handler is _run:  # other commands keep Ctrl-C = KeyboardInterrupt
        args.log_file = _log_file()
        signals.install()
    try:
        code = args.handler(args)
        if args.log_file is not None:  # a run that succeeded needs no log
            args.log_file.unlink(missing_ok=True)
        return code
    except FeaturizerError as exc:
        return _fail(str(exc), exc, exc.exit_code, args.log_file, verbose)
    except Stopped as exc:
        message = f"stopped by {exc}" + (f"; {exc.detail}" if exc.detail else "")
        return _fail(message, exc, exc.exit_code, args.log_file, verbose, prefix="")
    except KeyboardInterrupt as exc:  # SIGINT before our handler was installed
        return _fail("stopped by SIGINT", exc, 130, args.log_file, verbose, prefix="")
    except Exception as exc:  # not anticipated: still one line, and the trace
        return _fail(errors.cause(exc), exc, 1, args.log_file, verbose)


def _fail(
    message: str,
    exc: BaseException,
    code: int,
    log_file: Path | None,
    verbose: bool,
    prefix: str = "error: ",
) -> int:
    trace = "".join(traceback.format_exception(exc))
    if verbose:
        print(trace, file=sys.stderr)
    elif log_file is not None:
        with open(log_file, "a", encoding="utf-8") as log:
            log.write(f"\n--- featurizer: {message}\n{trace}")
        if code == 1:  # a failed run: where the details are
            message += f" (full log: {log_file})"
    print(f"featurizer: {prefix}{message}", file=sys.stderr, flush=True)
    return code


def exit_now(code: int) -> NoReturn:
    """End the process with `code` once the output is flushed, skipping Python's teardown:
    freeing every module and object of a run's driver (Spark, pyarrow, numpy) took 0.3-0.4 s
    after the run had finished, for memory the OS frees anyway. Nothing here relies on
    atexit: temporary folders and files are removed by the commands themselves, the JVM ends
    on its own when its stdin closes with this process."""
    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # e.g. a closed pipe: nothing left to say
            stream.flush()
    os._exit(code)


def entry() -> NoReturn:
    """The `featurizer` console script."""
    exit_now(main())


if __name__ == "__main__":
    entry()
