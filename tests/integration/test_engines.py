"""Every float32 engine gives the Keras reference's features, on real weights and photos."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from featurizer import engines, images, pipeline, weights
from featurizer.config import ENGINES, RunConfig

from processes import is_python_worker, session_processes

FAST_ENGINES = [engine for engine in ENGINES if engine != "keras"]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def decoded(fruits360: Path) -> np.ndarray:
    """64 real Fruits-360 photos from 64 classes, decoded (uint8)."""
    files = [sorted(folder.glob("*.jpg"))[0] for folder in sorted((fruits360 / "Test").iterdir())]
    stacked, errors = images.decode_many([path.read_bytes() for path in files[:64]])
    assert not any(errors)
    return stacked


@pytest.fixture(scope="module")
def photos(decoded: np.ndarray) -> np.ndarray:
    """The same photos, preprocessed (float32 in [-1, 1])."""
    return images.preprocess(decoded)


@pytest.fixture(scope="module")
def reference(photos: np.ndarray) -> np.ndarray:
    payload = engines.export("keras", weights.resolve())
    return engines.load("keras", payload.data, threads=2).predict(photos)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_engine_matches_keras_features(engine, photos, reference):
    predictor = engines.load(engine, engines.export(engine, weights.resolve()).data, threads=1)
    got = np.concatenate([predictor.predict(photos[i : i + 1]) for i in range(len(photos))])
    assert got.shape == (64, 1280) and got.dtype == np.float32
    similarity = cosine(got, reference)
    assert similarity.mean() >= 0.9999, similarity.mean()
    assert similarity.min() >= 0.999, similarity.min()


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_batch_size_does_not_change_features(engine, photos):
    predictor = engines.load(engine, engines.export(engine, weights.resolve()).data, threads=1)
    one_by_one = np.concatenate([predictor.predict(photos[i : i + 1]) for i in range(8)])
    assert np.allclose(predictor.predict(photos[:8]), one_by_one, atol=1e-4)
    assert predictor.predict(photos[:0]).shape == (0, 1280)


@pytest.mark.parametrize("engine", FAST_ENGINES)
def test_decoded_images_give_the_preprocessed_ones_features(engine, decoded, photos):
    """What the workers pass (uint8, preprocessed inside the engine) is bit for bit what the
    engine gives for the preprocessed images, one at a time and in a batch."""
    predictor = engines.load(engine, engines.export(engine, weights.resolve()).data, threads=1)
    for i in range(4):
        np.testing.assert_array_equal(
            predictor.predict(decoded[i : i + 1]), predictor.predict(photos[i : i + 1])
        )
    np.testing.assert_array_equal(predictor.predict(decoded[:8]), predictor.predict(photos[:8]))


@pytest.fixture(scope="module")
def fruit_folder(fruits360: Path, tmp_path_factory) -> Path:
    """120 photos of 6 classes."""
    folder = tmp_path_factory.mktemp("fruits")
    for class_dir in sorted((fruits360 / "Training").iterdir())[:6]:
        shutil.copytree(class_dir, folder / class_dir.name)
        for extra in sorted((folder / class_dir.name).glob("*.jpg"))[20:]:
            extra.unlink()
    return folder


def test_pca_outputs_agree_across_engines(spark, fruit_folder, tmp_path):
    outputs = {}
    for engine in ENGINES:
        pipeline.run(
            RunConfig(
                input=str(fruit_folder), output=str(tmp_path / engine), engine=engine, pca_k=5
            ),
            spark=spark,
        )
        frame = pq.read_table(tmp_path / engine / "features").to_pandas().sort_values("path")
        outputs[engine] = np.stack(frame["pca"].to_numpy())
    reference_pca = outputs["keras"]
    for engine in FAST_ENGINES:
        similarity = cosine(outputs[engine], reference_pca)
        assert similarity.min() >= 0.999, (engine, similarity.min())


def test_int8_stays_close_to_float32(photos, reference):
    """The opt-in int8 mode: calibrated on other photos, features stay close to Keras'."""
    calibration = lambda: ("photos-0-32", list(photos[32:]))  # noqa: E731
    data = engines.export("tflite", weights.resolve(), "int8", calibration).data
    float_data = engines.export("tflite", weights.resolve()).data
    assert len(data) < len(float_data) / 3  # int8 weights
    predictor = engines.load("tflite", data, threads=1)
    got = np.concatenate([predictor.predict(photos[i : i + 1]) for i in range(32)])
    similarity = cosine(got, reference[:32])
    assert similarity.mean() >= 0.95, similarity.mean()


def test_int8_run_calibrates_on_the_input(spark, fruit_folder, tmp_path):
    manifest = pipeline.run(
        RunConfig(
            input=str(fruit_folder),
            output=str(tmp_path / "int8"),
            precision="int8",
            pca_k=5,
            no_report=True,
        ),
        spark=spark,
    )
    assert manifest["engine"]["precision"] == "int8"
    assert manifest["counts"]["featurized"] == 120


def _libraries(pid: int) -> set[str]:
    """The shared objects a live process has mapped (empty once it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {line.split(maxsplit=5)[5] for line in lines if line.count(" ") >= 5 and ".so" in line}


def test_tflite_python_workers_never_load_tensorflow_and_are_reused(sample_dir, tmp_path):
    """A real `featurizer run` (the default tflite engine, 5 micro-batches): every Python
    worker's mapped libraries, read from /proc while the run goes on, hold LiteRT's and none
    of TensorFlow's (a worker that imported TensorFlow keeps its .so mapped until it exits);
    and the run forks one worker per core in all, for the warm-up job, the micro-batches and
    the output's write alike (with spark.python.worker.reuse off it forked 25)."""
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "featurizer"),
            "run",
            "--input",
            str(sample_dir),
            "--output",
            str(tmp_path / "out"),
            "--files-per-batch",
            "20",
            "--pca-k",
            "2",
            "--no-report",
            "--master",
            "local[2]",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    mapped: dict[int, set[str]] = {}  # worker (or daemon) pid -> every library seen mapped
    parents: dict[int, int] = {}

    def watch() -> None:
        while process.poll() is None:
            for worker in session_processes(process.pid):
                if is_python_worker(worker.cmdline):
                    mapped.setdefault(worker.pid, set()).update(_libraries(worker.pid))
                    parents[worker.pid] = int(worker.stat[1])
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    log, _ = process.communicate(timeout=600)
    watcher.join()
    assert process.returncode == 0, log[-3000:]
    litert = {pid for pid, libs in mapped.items() if any("/ai_edge_litert/" in p for p in libs)}
    assert litert, f"no Python worker was seen with LiteRT loaded: {sorted(mapped)}"
    with_tensorflow = {
        pid: sorted(p for p in libs if "/tensorflow/" in p) for pid, libs in mapped.items()
    }
    assert {pid: libs for pid, libs in with_tensorflow.items() if libs} == {}
    forked = {pid for pid, parent in parents.items() if parent in parents}  # not the daemon
    assert len(forked) == 2, f"local[2] forked Python workers {sorted(forked)}"


@pytest.mark.parametrize(
    ("engine", "runtime"),
    [("keras", "tensorflow"), ("tflite", "ai_edge_litert.interpreter")],
)
def test_warm_imports_the_engines_runtime_and_nothing_heavier(engine, runtime):
    """`engines.warm` (what the warm-up job runs in each Python worker) imports the runtime
    the engine's `load` needs; the TFLite engine's must not pull TensorFlow in."""
    probe = (
        "import sys; from featurizer import engines; "
        f"engines.warm({engine!r}); "
        "print(sorted(m for m in ('tensorflow', 'ai_edge_litert.interpreter') if m in sys.modules))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    ).stdout.split("\n")[-2]
    assert imported == str([runtime])
