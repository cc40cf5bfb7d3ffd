"""The output folder: its layout, who is writing it (the lease), and both ways a run ends
(commit or failed commit). Nothing else renames or deletes under an output.

    <output>/features/ errors/ pca_model/ manifest.json explained_variance.png report.*
    <output>/_SUCCESS        written last: an output without it is incomplete
    <output>/_lease.json     the live run's lease (owner, heartbeat, expiry); gone when it ends
    <output>/_work/          staging of a run: run.json (its settings), checkpoint/,
                             queue/ (the listed files the stream takes, when it queues them),
                             featurized/batch=N/ (micro-batches), result/ (to be committed);
                             incremental.json for an --incremental run
    <output>/_state/         what a complete output keeps for --incremental: the stream's
                             checkpoint/ (which input files it holds) and run.json
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from featurizer import errors, storage
from featurizer.errors import ConfigError, FeaturizerError

MANIFEST = "manifest.json"
EXPLAINED_VARIANCE_PNG = "explained_variance.png"  # the run's chart of the PCA's variance
ARTIFACTS = (
    "features",
    "errors",
    "pca_model",
    MANIFEST,
    EXPLAINED_VARIANCE_PNG,
    "report.json",
    "report.html",
)
SUCCESS = "_SUCCESS"
WORK = "_work"
STATE = "_state"
LEASE = "_lease.json"
# Fingerprint keys about _work/ only (_settings): how vectors are staged, and what the stream
# reads ("queue": the listed paths, FileSource.enqueue; "input": the input folder).
WORK_AREA_KEYS = ("staged_vectors", "stream")
LEASE_TTL_S = 45.0  # a lease not renewed for this long belongs to a dead run
HEARTBEAT_S = 10.0
T = TypeVar("T")
SETTLE_S = 1.0  # two runs that create a lease at once both see the winner


@dataclass(frozen=True)
class Layout:
    """Where a run's files go under the output URI."""

    output: str

    @property
    def work(self) -> str:
        return storage.join(self.output, WORK)

    @property
    def checkpoint(self) -> str:
        return storage.join(self.work, "checkpoint")

    @property
    def queue(self) -> str:
        return storage.join(self.work, "queue")

    @property
    def featurized(self) -> str:
        return storage.join(self.work, "featurized")

    @property
    def result(self) -> str:
        return storage.join(self.work, "result")

    @property
    def run_file(self) -> str:
        return storage.join(self.work, "run.json")

    @property
    def incremental_file(self) -> str:
        return storage.join(self.work, "incremental.json")

    @property
    def state(self) -> str:
        return storage.join(self.output, STATE)

    @property
    def kept_checkpoint(self) -> str:
        return storage.join(self.state, "checkpoint")

    @property
    def kept_run_file(self) -> str:
        return storage.join(self.state, "run.json")

    @property
    def lease(self) -> str:
        return storage.join(self.output, LEASE)

    def staged(self, name: str) -> str:
        return storage.join(self.result, name)

    def final(self, name: str) -> str:
        return storage.join(self.output, name)


# Placeholders an --output may hold, for runs that must each write an output of their own
# (scheduled runs): {app} is the Spark application's name (on the spark-operator the
# SparkApplication's: <schedule>-<timestamp> for a scheduled run, the same for its retries),
# {date} the UTC date when the run started.
PLACEHOLDERS = ("{app}", "{date}")


def needs_app_name(template: str) -> bool:
    return "{app}" in template


def expand(template: str, app_name: str | None = None, now: datetime | None = None) -> str:
    """The output URI for this run: `template` with its placeholders filled in."""
    uri = template.replace("{date}", (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d"))
    if needs_app_name(uri):
        if not app_name:
            raise ValueError("{app} needs the application's name")
        uri = uri.replace("{app}", app_name)
    return uri


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


# ---- the lease ------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    started_at: str
    heartbeat: float  # epoch seconds of the last renewal

    @staticmethod
    def parse(data: bytes) -> Holder | None:
        try:
            value = json.loads(data)
            return Holder(
                str(value["run_id"]),
                str(value["host"]),
                int(value["pid"]),
                str(value["started_at"]),
                float(value["heartbeat"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # a torn or foreign file: nobody holds it

    def to_json(self) -> bytes:
        return json.dumps(
            {**self.__dict__, "expires_at": _iso(self.heartbeat + LEASE_TTL_S)}
        ).encode()

    def alive(self, now: float) -> bool:
        if self.host == socket.gethostname() and (
            self.pid == os.getpid() or not _pid_alive(self.pid)
        ):
            # Our machine, and the process is gone, or is this one: a restarted container
            # keeps its host name and often its pid (a retried driver pod <app>-driver).
            return False
        return now - self.heartbeat < LEASE_TTL_S


class Lease:
    """Who is writing an output: a small JSON object that works the same on a local disk and
    on S3 (no locking primitive needed). A run writes its lease, waits SETTLE_S and reads it
    back: of runs that start together only the one whose lease is there goes on. A thread
    renews it every HEARTBEAT_S; a lease not renewed for LEASE_TTL_S (or whose process is
    gone, on this host) is stale and may be taken over."""

    def __init__(
        self, store: storage.Storage | storage.LocalStorage, layout: Layout, run_id: str
    ) -> None:
        self.store, self.layout = store, layout
        self.holder = Holder(
            run_id, socket.gethostname(), os.getpid(), _iso(time.time()), time.time()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created = False  # whether acquire created the output folder

    def current(self) -> Holder | None:
        try:
            return Holder.parse(self.store.read_bytes(self.layout.lease))
        except Exception:  # no lease (or unreadable: the output checks say why)
            return None

    def acquire(
        self,
        wait_for_stale: bool,
        meanwhile: Callable[[], T],
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """Take the lease or raise ConfigError naming the live run that holds it. With
        `wait_for_stale` (--resume: a retry of a run that just died, e.g. on another pod),
        wait up to one TTL for the holder's heartbeat to stop. `meanwhile` (work that writes
        nothing to the output: starting Spark, listing the input) runs while the lease
        settles, instead of after it; its result is returned (`holding`)."""
        try:
            holder = self.current()
            deadline = time.time() + LEASE_TTL_S + HEARTBEAT_S
            while holder is not None and holder.alive(time.time()):
                if not wait_for_stale or time.time() > deadline:
                    raise self._busy(holder)
                sleep(min(HEARTBEAT_S / 2, max(0.1, deadline - time.time())))
                renewed = self.current()
                if renewed is not None and renewed.heartbeat > holder.heartbeat:
                    raise self._busy(renewed)  # renewed meanwhile: that run is alive
                holder = renewed
            created = not self.store.exists(self.layout.output)
            self._write()
        except FeaturizerError:
            raise
        except Exception as exc:  # e.g. a missing bucket, a 403
            raise ConfigError(
                f"output {self.layout.output} is not writable: {errors.cause(exc)}"
            ) from None
        written = time.monotonic()
        self._created = created
        result = self.holding(meanwhile)
        sleep(max(0.0, SETTLE_S - (time.monotonic() - written)))
        winner = self.current()
        if winner is None or winner.run_id != self.holder.run_id:
            raise self._busy(winner or self.holder)
        self._thread = threading.Thread(target=self._renew, daemon=True, name="lease")
        self._thread.start()
        return result

    def holding(self, work: Callable[[], T]) -> T:
        """`work`'s result; if it fails (e.g. a bad input), the lease is given up, and the
        output too if this lease created it and nothing else is there: a refused run
        leaves nothing behind."""
        try:
            return work()
        except BaseException:
            self.release()
            with contextlib.suppress(Exception):
                if self._created and not self.store.list_names(self.layout.output):
                    self.store.delete(self.layout.output)
            raise

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
        try:
            holder = self.current()
            if holder is not None and holder.run_id == self.holder.run_id:
                self.store.delete(self.layout.lease)
        except Exception:  # best effort: an unreleased lease expires by itself
            pass

    def _write(self) -> None:
        self.holder = Holder(**{**self.holder.__dict__, "heartbeat": time.time()})
        self.store.write_bytes(self.layout.lease, self.holder.to_json())

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a storage hiccup: the next beat retries
                self._write()

    def _busy(self, holder: Holder) -> ConfigError:
        return ConfigError(
            f"output {self.layout.output} is being written by run "
            f"{holder.run_id} (host {holder.host}, pid {holder.pid}) since "
            f"{holder.started_at}; wait for it to end, or write elsewhere"
        )


# ---- preparing and committing ------------------------------------------------------------


def prepare(
    store: storage.Storage,
    layout: Layout,
    overwrite: bool,
    resume: bool,
    incremental: bool,
    fingerprint: dict,
) -> dict | None:
    """Refuse to clobber, clear a stale work area, or keep it for --resume; start an
    incremental run from the output's kept checkpoint. Call with the lease held. Returns an
    incremental run's record (new, or resumed: `work_id`, the `base` manifest), else None."""
    try:
        names = [name for name in store.list_names(layout.output) if name != LEASE]
    except Exception as exc:
        raise ConfigError(f"cannot access output {layout.output}: {errors.cause(exc)}") from None
    interrupted = WORK in names
    if resume and interrupted:
        previous = _read_json(store, layout.run_file)
        if previous != fingerprint:
            differing = _differing(previous, fingerprint)
            # what follows from the options (--limit does not queue) is not news
            shown = [key for key in differing if key not in WORK_AREA_KEYS] or differing
            raise ConfigError(
                f"{layout.output} holds a run with other settings "
                f"({', '.join(shown) or 'unknown'} differ); "
                f"--resume needs the same --input, --weights, --engine, --precision, --limit "
                f"and --sample-fraction (or use --overwrite)"
            )
        return _read_json(store, layout.incremental_file)  # an interrupted incremental run
    if incremental and names:  # into an empty output it is a first, full run
        return _start_incremental(store, layout, names, fingerprint)
    if resume and SUCCESS in names:
        raise ConfigError(f"{layout.output} is already complete; use --overwrite to redo it")
    if names and not (overwrite or resume):
        hint = (
            "it holds an interrupted run: pass --resume to continue it or --overwrite to start over"
            if names == [WORK]
            else "pass --overwrite to replace it (or --incremental to add new files)"
        )
        raise ConfigError(f"output {layout.output} is not empty; {hint}")
    try:
        if interrupted:
            store.delete(layout.work)
        store.mkdirs(layout.output)
        store.write_bytes(layout.run_file, json.dumps(fingerprint).encode())
    except Exception as exc:
        raise ConfigError(f"output {layout.output} is not writable: {errors.cause(exc)}") from None
    return None


def _start_incremental(
    store: storage.Storage, layout: Layout, names: list[str], fingerprint: dict
) -> dict:
    """The output's kept checkpoint is copied, not moved, into the work area: the stream
    then sees only files the output does not hold, and a run cut short leaves the output
    (and its record) exactly as it was."""
    if WORK in names:
        raise ConfigError(
            f"{layout.output} holds an interrupted run: pass --resume to finish it first"
        )
    if SUCCESS not in names:
        raise ConfigError(
            f"--incremental adds to a complete output; {layout.output} is not one "
            f"(run without --incremental first)"
        )
    kept = _read_json(store, layout.kept_run_file)
    if kept is None or not store.exists(layout.kept_checkpoint):
        raise ConfigError(
            f"{layout.output} keeps no record of the files it holds (it was written with "
            f"--limit or --sample-fraction, or by an older featurizer): redo it with --overwrite"
        )
    if fingerprint.get("stream") == "input" and kept.get("stream", "input") != "input":
        # The kept checkpoint names queue files, not the input's: streaming the input
        # against it would take every file again.
        raise ConfigError(
            f"{layout.output} was featurized by Python workers reading its files, which "
            f"cannot read {fingerprint['input']} with this run's S3 settings (the JVM would "
            f"have to): add to it with the settings it was written with, or --overwrite"
        )
    kept, settings = _settings(kept), _settings(fingerprint)
    if kept != settings:
        raise ConfigError(
            f"{layout.output} was featurized with other settings "
            f"({', '.join(_differing(kept, settings))} differ); --incremental needs the "
            f"same --input, --weights, --engine and --precision (or --overwrite to redo it)"
        )
    # The base manifest is kept with the work: a resumed run adds to the same totals even if
    # a commit cut short had already replaced the output's manifest.
    work = {
        "work_id": uuid.uuid4().hex[:12],
        "base": _read_json(store, layout.final(MANIFEST)),
    }
    try:
        store.copy(layout.kept_checkpoint, layout.checkpoint)
        store.write_bytes(layout.run_file, json.dumps(fingerprint).encode())
        store.write_bytes(layout.incremental_file, json.dumps(work).encode())
    except Exception as exc:
        raise ConfigError(f"output {layout.output} is not writable: {errors.cause(exc)}") from None
    return work


def _settings(fingerprint: dict) -> dict:
    """A fingerprint without what describes only a work area (how it stages vectors): an
    output an older featurizer wrote still takes --incremental runs."""
    return {key: value for key, value in fingerprint.items() if key not in WORK_AREA_KEYS}


def _read_json(store: storage.Storage, uri: str) -> Any:
    return json.loads(store.read_bytes(uri)) if store.exists(uri) else None


def _differing(previous: dict | None, current: dict) -> list[str]:
    return sorted(key for key in current if (previous or {}).get(key) != current[key])


def commit(store: storage.Storage, layout: Layout, keep_state: bool) -> None:
    """Move staged results into place; `_SUCCESS` last, so partial output never looks done.
    With `keep_state` the stream's checkpoint stays, as the record --incremental reads."""
    _clear(store, layout)
    for name in ARTIFACTS:
        if store.exists(layout.staged(name)):
            store.rename(layout.staged(name), layout.final(name))
    if keep_state:
        store.mkdirs(layout.state)
        store.rename(layout.checkpoint, layout.kept_checkpoint)
        store.rename(layout.run_file, layout.kept_run_file)
    store.write_bytes(layout.final(SUCCESS), b"")
    store.delete(layout.work)


def commit_added(store: storage.Storage, layout: Layout, work_id: str) -> None:
    """An incremental run's rows join the output: `_SUCCESS` goes first and comes back last,
    so a reader that checks it never takes a half-added output for a complete one. The new
    files are named after the work id, so a commit cut short and resumed replaces its own
    files instead of adding them twice."""
    store.delete(layout.final(SUCCESS))
    for folder in ("features", "errors"):
        staged, final = layout.staged(folder), layout.final(folder)
        if not store.exists(staged):
            continue
        store.mkdirs(final)
        for name in store.list_names(final):
            if name.startswith(f"part-{work_id}-"):
                store.delete(storage.join(final, name))
        parts = [name for name in store.list_names(staged) if name.endswith(".parquet")]
        for index, name in enumerate(parts):
            store.rename(
                storage.join(staged, name),
                storage.join(final, f"part-{work_id}-{index:05d}.parquet"),
            )
    for name in (MANIFEST, EXPLAINED_VARIANCE_PNG):
        if store.exists(layout.staged(name)):
            if store.exists(layout.final(name)):
                store.delete(layout.final(name))
            store.rename(layout.staged(name), layout.final(name))
    store.delete(layout.kept_checkpoint)
    store.rename(layout.checkpoint, layout.kept_checkpoint)
    store.write_bytes(layout.final(SUCCESS), b"")
    store.delete(layout.work)


def commit_failed(store: storage.Storage, layout: Layout, manifest: bytes) -> None:
    """A run that failed after featurizing: only its staged errors/ and a failed manifest
    replace the output (never a `_SUCCESS`); the work area goes."""
    _clear(store, layout)
    if store.exists(layout.staged("errors")):
        store.rename(layout.staged("errors"), layout.final("errors"))
    store.write_bytes(layout.final(MANIFEST), manifest)
    store.delete(layout.work)


def _clear(store: storage.Storage, layout: Layout) -> None:
    """Remove a previous run's marker first, then everything else it held (--overwrite
    replaces the output, stray files and the kept _state/ too), except this run's work area
    and lease."""
    if store.exists(layout.final(SUCCESS)):
        store.delete(layout.final(SUCCESS))
    for name in store.list_names(layout.output):
        if name not in (SUCCESS, WORK, LEASE):
            store.delete(layout.final(name))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
