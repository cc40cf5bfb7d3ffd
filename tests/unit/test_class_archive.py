"""Which JVM class-data archive a local run maps or records (class_archive.py)."""

from __future__ import annotations

import os
import subprocess

import pytest

from featurizer import class_archive


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATURIZER_CACHE", str(tmp_path))
    monkeypatch.delenv("FEATURIZER_CDS", raising=False)
    return tmp_path / "cds"


def test_without_an_archive_a_run_records_one_named_by_its_process(cache):
    assert class_archive.for_this_jvm(record=False) is None
    archive = class_archive.for_this_jvm(record=True)
    assert archive.path.parent == cache and archive.path.suffix == ".jsa"
    assert archive.recording == archive.path.with_suffix(f".{os.getpid()}.part")
    assert archive.java_options().startswith(f"-XX:ArchiveClassesAtExit={archive.recording} ")


def test_a_published_archive_is_mapped_not_recorded_again(cache):
    path = class_archive.for_this_jvm(record=True).path
    path.write_bytes(b"archive")
    archive = class_archive.for_this_jvm(record=True)
    assert archive.recording is None
    assert archive.java_options() == f"-XX:SharedArchiveFile={path}"


def test_recordings_of_dead_runs_are_removed_live_ones_kept(cache):
    cache.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = cache / f"spark-0123456789abcdef.{dead.pid}.part"
    live = cache / f"spark-0123456789abcdef.{os.getpid()}.part"
    orphan.write_bytes(b"x"), live.write_bytes(b"x")
    class_archive.for_this_jvm(record=False)
    assert not orphan.exists() and live.exists()


def test_turned_off_by_the_environment(cache, monkeypatch):
    monkeypatch.setenv("FEATURIZER_CDS", "0")
    assert class_archive.for_this_jvm(record=True) is None


def test_only_the_most_recently_used_archives_are_kept(cache):
    cache.mkdir()
    for age, name in enumerate(["c", "b", "a", "d"]):  # d is the oldest
        path = cache / f"spark-{name}.jsa"
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 - age * 100, 1_000_000 - age * 100))
    class_archive.keep_recent(cache, 3)
    assert sorted(p.name for p in cache.iterdir()) == ["spark-a.jsa", "spark-b.jsa", "spark-c.jsa"]


def test_a_cache_that_cannot_be_written_means_no_recording(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FEATURIZER_CACHE", str(tmp_path / "file" / "cache"))  # not a folder
    monkeypatch.delenv("FEATURIZER_CDS", raising=False)
    assert class_archive.for_this_jvm(record=True) is None


def test_the_key_follows_the_files_not_just_their_paths(tmp_path):
    """A virtualenv reinstalled at the same path gets new jars: the JVM would reject the old
    archive, so it must not be looked up under the same name."""
    java = tmp_path / "java"
    java.write_bytes(b"x")
    os.utime(java, (1_000_000, 1_000_000))
    before = class_archive._key(java)
    os.utime(java, (2_000_000, 2_000_000))
    assert class_archive._key(java) != before
