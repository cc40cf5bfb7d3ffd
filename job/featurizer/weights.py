"""Find the MobileNetV2 weights file and build the Keras model from it.

Resolution order for `--weights imagenet`: FEATURIZER_WEIGHTS (a file), an offline mirror
directory holding Keras' own file names (FEATURIZER_WEIGHTS_DIR), the Keras cache
(~/.keras/models), and finally Keras' download. Executors never resolve anything: the
driver ships the bytes (see engines/).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurizer.errors import ConfigError

NO_TOP_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
FULL_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
KERAS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + NO_TOP_FILE
)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
FEATURE_DIM = 1280
HOW_TO_PROVIDE = (
    f"pass --weights /path/to/{NO_TOP_FILE}, or set FEATURIZER_WEIGHTS to that "
    f"file, or FEATURIZER_WEIGHTS_DIR to a folder that holds it"
)


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


def resolve(spec: str = "imagenet", download: bool = True) -> WeightsFile:
    """Turn --weights into a local, checked .h5 file (raises ConfigError with a fix)."""
    if spec != "imagenet":
        return _checked(Path(spec).expanduser(), origin="--weights")
    for candidate in _offline_candidates():
        if candidate.is_file():
            return _checked(candidate, origin=str(candidate.parent))
    if download:
        return _checked(_download(), origin="Keras download")
    raise ConfigError(f"no MobileNetV2 weights found offline: {HOW_TO_PROVIDE}")


def _keras_models() -> Path:
    """Keras' own cache of downloaded weights."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "models"


def _offline_candidates() -> list[Path]:
    candidates = []
    if os.environ.get("FEATURIZER_WEIGHTS"):
        candidates.append(Path(os.environ["FEATURIZER_WEIGHTS"]).expanduser())
    for folder in (
        os.environ.get("FEATURIZER_WEIGHTS_DIR"),
        str(_keras_models()),
    ):
        if folder:
            candidates += [
                Path(folder).expanduser() / NO_TOP_FILE,
                Path(folder).expanduser() / FULL_FILE,
            ]
    return candidates


def _download() -> Path:
    """Into Keras' own cache (~/.keras/models, where Keras would put it), without importing
    TensorFlow on the driver for one HTTP GET; write-then-rename, so no torn file is cached."""
    import tempfile
    import urllib.request

    target = _keras_models() / NO_TOP_FILE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as part,
            urllib.request.urlopen(KERAS_URL, timeout=60) as response,
        ):
            while chunk := response.read(1 << 20):
                part.write(chunk)
        os.chmod(part.name, 0o644)
        os.replace(part.name, target)
        return target
    except Exception as exc:  # no network, proxy, DNS, a read-only home ...
        with contextlib.suppress(Exception):
            os.unlink(part.name)
        raise ConfigError(
            f"could not download MobileNetV2 weights ({type(exc).__name__}: {exc}); "
            f"{HOW_TO_PROVIDE}"
        ) from None


def _checked(path: Path, origin: str) -> WeightsFile:
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path} (from {origin}); {HOW_TO_PROVIDE}")
    with path.open("rb") as handle:
        if handle.read(8) != HDF5_MAGIC:
            raise ConfigError(f"weights file is not a Keras HDF5 (.h5) file: {path}")
    return WeightsFile(path=path.resolve(), sha256=sha256_file(path))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_model(weights_path: str | os.PathLike[str]) -> Any:
    """MobileNetV2 up to the 1280-d global average pool, with these weights.

    Accepts the 'no_top' file (Keras' own include_top=False path) and also the full
    ImageNet file, whose classifier is cut off after the pooling layer.
    """
    import keras

    try:
        return keras.applications.MobileNetV2(
            input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=str(weights_path)
        )
    except ValueError as no_top_error:
        try:
            full = keras.applications.MobileNetV2(
                input_shape=(224, 224, 3), include_top=True, weights=str(weights_path)
            )
        except ValueError:
            raise ConfigError(
                f"{weights_path} does not hold MobileNetV2 (alpha 1.0, 224) weights: {no_top_error}"
            ) from None
        # By type, not by name: Keras numbers auto-named layers per process
        # (global_average_pooling2d_1 once another model has been built).
        pools = [
            layer for layer in full.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)
        ]
        if len(pools) != 1:
            raise ConfigError(
                f"{weights_path}: expected one global average pooling layer in "
                f"MobileNetV2, found {len(pools)}"
            ) from None
        return keras.Model(full.input, pools[0].output, name="mobilenetv2_1.00_224_pooled")
