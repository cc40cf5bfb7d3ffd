"""TFLite (LiteRT) engine: the Keras model converted once to a float32 flatbuffer.

The driver converts the Keras model (no quantization; in a child process, so TensorFlow
never enters the driver) and caches the flatbuffer on disk, keyed by the weights' sha256 and
the TensorFlow version, so later runs skip TensorFlow entirely. Workers run it with the
LiteRT interpreter (XNNPACK), never importing TensorFlow: start-up is sub-second and each
worker uses `spark.task.cpus` threads.
"""

from __future__ import annotations

import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from featurizer import config
from featurizer.images import preprocess
from featurizer.weights import FEATURE_DIM, WeightsFile, build_model


def cache_dir() -> Path:
    return config.cache_dir("engines")


def _tensorflow_version() -> str:
    for package in ("tensorflow", "tensorflow-cpu"):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return "none"


def export(weights: WeightsFile, precision: str = "float32", calibration: Any = None) -> bytes:
    """The flatbuffer for these weights: float32, or int8 calibrated on `calibration`."""
    name = f"mobilenetv2-{weights.sha256[:16]}-tf{_tensorflow_version()}"
    samples = None
    if precision == "int8":
        digest, samples = calibration()
        name += f"-int8-{digest[:16]}"
    cached = cache_dir() / f"{name}.tflite"
    if cached.is_file():
        return cached.read_bytes()
    data = _convert_apart(str(weights.path), samples)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as handle:
            handle.write(data)  # write-then-rename: no torn cache files
        os.chmod(handle.name, 0o644)  # temp files are 0600; others read it too
        os.replace(handle.name, cached)
    except OSError:  # read-only cache: fine, just not cached
        pass
    return data


def _convert_apart(weights_path: str, samples: Any) -> bytes:
    """Build and convert in a child process: TensorFlow's ~1 GB (and its threads) never
    enter the driver, whose peak then stays that of the pipeline (tests/reliability/
    test_memory.py). Spawned, not forked: the driver holds a JVM gateway and threads."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_build_and_convert, (weights_path, samples))


def _build_and_convert(weights_path: str, samples: Any) -> bytes:
    return convert(build_model(weights_path), samples)


def convert(model: Any, calibration: Any = None) -> bytes:
    """Keras model -> TFLite flatbuffer: float32 (no quantization), or, given calibration
    images, int8 weights and activations (full-integer quantization; float input and
    output, so the engine is used the same way)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = []
    if calibration is not None:
        images = list(calibration)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in images)
    return converter.convert()


def warm() -> None:
    _interpreter_class()


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # images without LiteRT: TF's copy
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


class TflitePredictor:
    def __init__(self, data: bytes, threads: int) -> None:
        self._interpreter = _interpreter_class()(model_content=data, num_threads=threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._interpreter.allocate_tensors()  # applies XNNPACK now (engines.load is quiet)
        self._batch = int(self._interpreter.get_input_details()[0]["shape"][0])

    def predict(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, FEATURE_DIM), np.float32)
        if len(images) != self._batch:  # re-plan only when the batch size changes
            self._interpreter.resize_tensor_input(self._input, list(images.shape))
            self._interpreter.allocate_tensors()
            self._batch = len(images)
        if images.dtype == np.uint8:  # preprocessed into the input tensor: no set_tensor copy
            preprocess(images, out=self._interpreter.tensor(self._input)())
            # (the view is gone again here: the interpreter refuses to run while one lives)
        else:
            self._interpreter.set_tensor(self._input, np.ascontiguousarray(images, np.float32))
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()


def load(data: bytes, threads: int) -> TflitePredictor:
    return TflitePredictor(data, threads)
