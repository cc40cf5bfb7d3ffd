"""A JVM class-data archive (AppCDS) that makes local runs start faster.

A local run spends seconds of its two cores loading and verifying the same ~20,000 Spark
classes every time. Java 17 can record them once into a dynamic CDS archive and map it on
later starts: measured on 200 images, Spark start-up 4.3 -> 2.0 s and the whole run
17.1 -> 10.7 s (BENCHMARKS.md). The first local run records the archive when its JVM exits
(~240 MB under ~/.cache/featurizer/cds/); `FEATURIZER_CDS=0` turns this off.

The JVM writes the archive after the Python driver lets it go, so a recording run waits for
its JVM to exit and then publishes the file under its final name with an atomic rename: a
run never maps a half-written archive. The JVM itself rejects an archive that does not match
its JDK or class path (and then starts without it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from featurizer.config import cache_dir

EXIT_TIMEOUT_S = 120
KEEP = 3  # archives of different installs (~240 MB each)


@dataclass(frozen=True)
class ClassArchive:
    path: Path  # the published archive
    recording: Path | None  # where this run's JVM records one (None: mapping `path`)

    def java_options(self) -> str:
        if self.recording is None:
            return f"-XX:SharedArchiveFile={self.path}"
        # -Xlog: the JVM lists every class it cannot archive (thousands of lines).
        return f"-XX:ArchiveClassesAtExit={self.recording} -Xlog:cds*=off"


def for_this_jvm(record: bool) -> ClassArchive | None:
    """The archive matching this Java and Spark install, or one to record (if `record`)."""
    if os.environ.get("FEATURIZER_CDS", "1") == "0":
        return None
    java = shutil.which("java", path=_java_path())
    if java is None:
        return None
    path = cache_dir("cds") / f"spark-{_key(Path(java).resolve())}.jsa"
    _remove_orphans(path.parent)
    if path.is_file():
        with contextlib.suppress(OSError):
            os.utime(path)  # last used: publish() keeps the recent ones
        return ClassArchive(path, None)
    if not record or not _writable(path.parent):
        return None
    return ClassArchive(path, path.with_suffix(f".{os.getpid()}.part"))


def publish(archive: ClassArchive) -> bool:
    """After spark.stop(): let the JVM exit (it writes the archive then), publish it."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None)
    if archive.recording is None or gateway is None or process is None:
        return False
    gateway.shutdown()
    process.stdin.close()  # the gateway JVM exits on EOF of its stdin
    try:
        process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # its recording is removed once it is gone
        return False
    finally:
        SparkContext._gateway = SparkContext._jvm = None  # a later session starts a new JVM
    if process.returncode != 0 or not archive.recording.is_file():
        archive.recording.unlink(missing_ok=True)
        return False
    os.replace(archive.recording, archive.path)
    keep_recent(archive.path.parent, KEEP)
    return True


def keep_recent(folder: Path, keep: int) -> None:
    """One archive per Java + Spark install (checkouts, virtualenvs): keep the last used."""
    archives = sorted(folder.glob("spark-*.jsa"), key=lambda path: path.stat().st_mtime)
    for stale in archives[:-keep]:
        stale.unlink(missing_ok=True)


def _writable(folder: Path) -> bool:
    """A read-only cache (the image's, as user 185) means: run without recording."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _remove_orphans(folder: Path) -> None:
    """Recordings of runs that died before publishing (named by the recording process)."""
    for part in folder.glob("spark-*.part"):
        pid = int(part.suffixes[-2].lstrip("."))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


def _java_path() -> str | None:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin") if home else None


def _key(java: Path) -> str:
    """The Java binary and every jar on the class path, as the JVM checks them (path, size,
    mtime): a reinstalled virtualenv at the same path must not reuse an archive it rejects."""
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar"))
    parts = [f"{path} {path.stat().st_size} {path.stat().st_mtime_ns}" for path in [java, *jars]]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
