"""RunConfig: every option of `featurizer run`, defined once.

The same definition drives the CLI (`featurizer run --help`), the spark-submit
entry point (`job/main.py`), and every launcher that renders job arguments
(helm chart, EMR entryPointArguments) via `RunConfig.to_argv()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurizer.errors import ConfigError

ENGINES = ("tflite", "keras")
PRECISIONS = ("float32", "int8")
INPUT_FORMATS = ("auto", "files", "parquet")
DEFAULT_ENGINE = "tflite"
# Images per engine call, measured on CPU (see BENCHMARKS.md): XNNPACK is fastest one image
# at a time; TensorFlow needs batches to amortize its per-call overhead.
ENGINE_BATCH = {"tflite": 1, "keras": 64}
# Rows per Arrow batch sent to a Python worker: bounds worker memory, amortizes transfers.
ARROW_BATCH = 64
# Files a micro-batch takes per core of the run's Spark, unless --files-per-batch says: ~30 s
# of work at ~125 images/s a core, so the ~0.4 s between two micro-batches stays ~1% on any
# cluster (a fixed 8,192 was ~1 s of work on 64 cores; docs/CAPACITY.md, assumption 3).
FILES_PER_CORE = 4096
# The master URLs Spark accepts (SparkContext.createTaskScheduler), checked before it starts.
MASTER = re.compile(
    r"^(local(\[\s*(\*|\d+)\s*(,\s*\d+\s*)?\])?|local-cluster\[[\d,\s]+\]|"
    r"spark://\S+|k8s://\S+|yarn)$"
)


def cache_dir(*parts: str) -> Path:
    """Where featurizer keeps what it builds once per machine (FEATURIZER_CACHE)."""
    return (
        Path(os.environ.get("FEATURIZER_CACHE", "~/.cache/featurizer"))
        .expanduser()
        .joinpath(*parts)
    )


def _opt(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A dataclass field that also carries its argparse definition."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass(frozen=True)
class RunConfig:
    input: str = _opt(
        None,
        "Input folder URI: a path, file://, s3a:// or s3:// "
        "(images found recursively; label = parent folder name).",
        required=True,
    )
    input_format: str = _opt(
        "auto",
        "files (folders of .jpg/.jpeg/.png) or parquet (rows of "
        "image bytes, as `featurizer pack` writes them, or img2dataset / "
        "Hugging Face exports); auto: parquet if the input holds "
        "_pack.json or .parquet files at its top.",
        choices=INPUT_FORMATS,
    )
    path_column: str = _opt("path", "Packed input: the column with each image's path.")
    label_column: str = _opt("label", "Packed input: the column with each image's label.")
    content_column: str = _opt(
        "content",
        "Packed input: the column with the image bytes (a nested field as a.b, e.g. image.bytes).",
    )
    output: str = _opt(
        None,
        "Output folder URI (features/, errors/, pca_model/, "
        "manifest.json, explained_variance.png, _SUCCESS). {app} in it becomes "
        "the Spark application's name, {date} the UTC date (one output per "
        "scheduled run).",
        required=True,
    )
    weights: str = _opt(
        "imagenet",
        "'imagenet' (resolved offline first, see README) or a "
        "Keras .h5 weights file for MobileNetV2. Env: FEATURIZER_WEIGHTS.",
    )
    engine: str = _opt(
        DEFAULT_ENGINE,
        "Inference engine: tflite (LiteRT/XNNPACK, float32, "
        "converted from the Keras model) or keras (TensorFlow reference).",
        choices=ENGINES,
    )
    precision: str = _opt(
        "float32",
        "Engine arithmetic: float32, or int8 (tflite only: "
        "weights and activations quantized, calibrated on up to 128 of the "
        "input's images; ~2x faster, see BENCHMARKS.md for its accuracy).",
        choices=PRECISIONS,
    )
    pca_k: int | None = _opt(None, "Number of PCA components (overrides --pca-variance).", type=int)
    pca_variance: float = _opt(
        0.95,
        "Pick the smallest k whose cumulative explained variance reaches this fraction.",
        type=float,
    )
    pca_model: str | None = _opt(
        None,
        "Project with this fitted PCA model (the pca_model/ "
        "folder of an earlier output, local or S3) instead of fitting "
        "one, e.g. fit on Training, then featurize Test with the same "
        "components; its k applies.",
        metavar="URI",
    )
    batch_size: int | None = _opt(
        None,
        "Images per inference call (default: the engine's measured best, tflite 1, keras 64).",
        type=int,
    )
    files_per_batch: int | None = _opt(
        None,
        f"Files per streaming micro-batch, the unit of --resume (default: {FILES_PER_CORE:,} "
        "per core of the run's Spark, ~30 s of work).",
        type=int,
    )
    master: str | None = _opt(
        None,
        "Spark master URL (default: local[*,3] = all cores, 3 task attempts; or whatever "
        "spark-submit set).",
    )
    limit: int | None = _opt(
        None,
        "Featurize at most N files: the oldest first (by modification time, then path).",
        type=int,
    )
    sample_fraction: float | None = _opt(
        None,
        "Featurize a deterministic pseudo-random fraction of the files (0 < F <= 1).",
        type=float,
    )
    max_error_rate: float = _opt(
        0.05,
        "Fail the run (after writing errors/) when more than "
        "this fraction of files cannot be decoded.",
        type=float,
    )
    overwrite: bool = _opt(False, "Replace an existing output.", action="store_true")
    resume: bool = _opt(
        False,
        "Continue an interrupted run into the same output, featurizing only files not done yet.",
        action="store_true",
    )
    incremental: bool = _opt(
        False,
        "Add to a complete output only the input's files it does not hold yet (the same "
        "--input, --weights, --engine and --precision; into an empty output: a full run); "
        "the new rows are projected with the output's PCA model unless --refit-pca.",
        action="store_true",
    )
    refit_pca: bool = _opt(
        False,
        "With --incremental: fit PCA again on every row, old and new, and rewrite the pca "
        "column of all of them (--pca-k / --pca-variance apply).",
        action="store_true",
    )
    no_report: bool = _opt(
        False,
        "Do not write report.json / report.html at the end of the run (see `featurizer report`).",
        action="store_true",
    )
    conf: tuple[str, ...] = _opt((), "Extra Spark config KEY=VALUE (repeatable).", action="append")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.input:
            raise ConfigError("--input is required")
        if not self.output:
            raise ConfigError("--output is required")
        if self.pca_k is not None and not 1 <= self.pca_k <= 1280:
            raise ConfigError(f"--pca-k must be between 1 and 1280, got {self.pca_k}")
        if not 0 < self.pca_variance <= 1:
            raise ConfigError(f"--pca-variance must be in (0, 1], got {self.pca_variance}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.files_per_batch is not None and self.files_per_batch < 1:
            raise ConfigError(f"--files-per-batch must be >= 1, got {self.files_per_batch}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.sample_fraction is not None and not 0 < self.sample_fraction <= 1:
            raise ConfigError(f"--sample-fraction must be in (0, 1], got {self.sample_fraction}")
        if not 0 <= self.max_error_rate <= 1:
            raise ConfigError(f"--max-error-rate must be in [0, 1], got {self.max_error_rate}")
        if self.pca_model is not None and self.pca_k is not None:
            raise ConfigError("--pca-model brings its own k: leave out --pca-k")
        if self.overwrite and self.resume:
            raise ConfigError("--overwrite and --resume exclude each other")
        if self.refit_pca and not self.incremental:
            raise ConfigError("--refit-pca goes with --incremental (a full run always fits)")
        if self.incremental:
            for flag, value in (
                ("--overwrite", self.overwrite),
                ("--limit", self.limit),
                ("--sample-fraction", self.sample_fraction),
                ("--pca-model", self.pca_model),
            ):
                if value:
                    raise ConfigError(
                        f"--incremental adds every new file with the output's "
                        f"own settings: leave out {flag}"
                    )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision}"
            )
        if self.precision != "float32" and self.engine != "tflite":
            raise ConfigError(f"--precision {self.precision} needs --engine tflite")
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine}")
        if self.master is not None and not MASTER.match(self.master):
            raise ConfigError(
                f"--master must be local, local[N], local[*], local[N,RETRIES], "
                f"spark://HOST:PORT, k8s://URL or yarn, got {self.master!r}"
            )
        for item in self.conf:
            if "=" not in item:
                raise ConfigError(f"--conf expects KEY=VALUE, got {item!r}")

    @property
    def weights_spec(self) -> str:
        """--weights, unless left at its default and FEATURIZER_WEIGHTS is set."""
        if self.weights == "imagenet":
            return os.environ.get("FEATURIZER_WEIGHTS") or "imagenet"
        return self.weights

    @property
    def inference_batch(self) -> int:
        return self.batch_size or ENGINE_BATCH[self.engine]

    def batch_files(self, cores: int) -> int:
        """Files a micro-batch takes on `cores` cores (Spark's default parallelism)."""
        return self.files_per_batch or FILES_PER_CORE * max(1, cores)

    @property
    def queue_file_paths(self) -> int:
        """Paths a file of the run's queue holds (FileSource.enqueue): a whole micro-batch's
        when --files-per-batch is given, else one core's share, the stream then taking one
        file per core (known only once Spark runs, after the local walk wrote them)."""
        return self.files_per_batch or FILES_PER_CORE

    @property
    def spark_conf(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.conf)

    # ---- argv round trip -------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in dataclasses.fields(cls):
            meta = dict(f.metadata)
            flag = "--" + f.name.replace("_", "-")
            if meta.get("action") not in ("store_true", "append"):
                meta.setdefault("default", f.default)
                if "choices" not in meta:  # argparse shows {a,b} for choices
                    meta.setdefault("metavar", f.name.upper())
                if f.default is not None and "(default" not in meta["help"]:
                    meta["help"] += f" (default: {f.default})"
            parser.add_argument(flag, dest=f.name, **meta)

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> RunConfig:
        values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)}
        values["conf"] = tuple(values["conf"] or ())
        return cls(**values)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> RunConfig:
        parser = argparse.ArgumentParser(prog="featurizer run")
        cls.add_arguments(parser)
        return cls.from_namespace(parser.parse_args(list(argv)))

    def to_argv(self) -> list[str]:
        """The shortest argv that parses back to this config (defaults omitted)."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.metadata.get("action") == "store_true":
                argv += [flag] if value else []
            elif f.metadata.get("action") == "append":
                for item in value:
                    argv += [flag, item]
            elif value != f.default:
                argv += [flag, str(value)]
        return argv

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
