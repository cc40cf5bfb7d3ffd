"""Inference engines: export once on the driver, load once per Python worker.

An engine turns (n, 224, 224, 3) images into float32 (n, 1280) MobileNetV2 pooled
features: decoded uint8 images (images.decode's), which it preprocesses itself (the TFLite
engine straight into its input tensor), or float32 ones already in [-1, 1]. `export` runs
on the driver and returns the bytes every executor needs (they travel once, as a Spark
broadcast); `load` runs in a Python worker, on a cache miss only (see featurizer.udf).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from featurizer.quiet import native_output_quieted
from featurizer.weights import WeightsFile


class Predictor(Protocol):
    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (decoded) or float32 (preprocessed) images -> float32 (n, 1280)."""
        ...


@dataclass(frozen=True)
class Payload:
    """Everything a worker needs to build the engine; `key` identifies it cheaply."""

    engine: str
    data: bytes

    @property
    def key(self) -> str:
        return f"{self.engine}-{hashlib.sha256(self.data).hexdigest()[:16]}"


def _module(engine: str):
    return importlib.import_module(f"featurizer.engines.{engine}_engine")


# Preprocessed sample images (float32, (224, 224, 3) each) and a digest naming them: what
# reduced-precision exports calibrate on.
Calibration = Callable[[], tuple[str, Iterable[np.ndarray]]]


def export(
    engine: str,
    weights: WeightsFile,
    precision: str = "float32",
    calibration: Calibration | None = None,
) -> Payload:
    with native_output_quieted():
        if precision == "float32":
            return Payload(engine, _module(engine).export(weights))
        return Payload(engine, _module(engine).export(weights, precision, calibration))


def warm(engine: str) -> None:
    """Import an engine's runtime ahead of `load`."""
    _module(engine).warm()


def load(engine: str, data: bytes, threads: int) -> Predictor:
    with native_output_quieted():
        return _module(engine).load(data, threads)
