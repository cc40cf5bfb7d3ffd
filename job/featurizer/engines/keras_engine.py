"""The reference engine: Keras MobileNetV2 under a tf.function (traced once)."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from featurizer.images import preprocess
from featurizer.weights import FEATURE_DIM, WeightsFile, build_model


def export(weights: WeightsFile) -> bytes:
    return weights.read_bytes()


def warm() -> None:
    """Import TensorFlow (seconds) before the first batch needs it; runs no op, so
    `configure_threads` still applies afterwards."""
    import tensorflow  # noqa: F401


def configure_threads(threads: int) -> None:
    """Bound TensorFlow to the task's cores; must run before TF executes any op."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialized in this process: keep its setting
        pass


class KerasPredictor:
    def __init__(self, model) -> None:
        import tensorflow as tf

        # A fixed signature with a free batch dimension: one trace for every batch size.
        self._forward = tf.function(
            lambda images: model(images, training=False),
            input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)],
        )

    def predict(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, FEATURE_DIM), np.float32)
        if images.dtype == np.uint8:
            images = preprocess(images)
        return self._forward(images).numpy()


def load(data: bytes, threads: int) -> KerasPredictor:
    configure_threads(threads)
    with tempfile.TemporaryDirectory(prefix="featurizer-weights-") as folder:
        path = os.path.join(folder, "weights.h5")
        with open(path, "wb") as handle:
            handle.write(data)
        return KerasPredictor(build_model(path))
