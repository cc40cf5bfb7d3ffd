"""The output folder: its layout, who is writing it (the lease), and both ways a run ends
(commit or failed commit). Nothing else renames or deletes under an output.

    <output>/features/ errors/ pca_model/ manifest.json explained_variance.png report.*
    <output>/_SUCCESS        written last: an output without it is incomplete
    <output>/_lease.json     the live run's lease (owner, heartbeat, expiry); gone when it ends
    <output>/_work/          staging of a run: run.json (its settings), checkpoint/,
                             featurized/batch=N/ (micro-batches), result/ (to be committed)
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

from featurizer import errors, storage
from featurizer.errors import ConfigError

ARTIFACTS = ("features", "errors", "pca_model", "manifest.json", "explained_variance.png",
             "report.json", "report.html")
SUCCESS = "_SUCCESS"
WORK = "_work"
LEASE = "_lease.json"
LEASE_TTL_S = 45.0               # a lease not renewed for this long belongs to a dead run
HEARTBEAT_S = 10.0
SETTLE_S = 1.0                   # two runs that create a lease at once both see the winner


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
    def featurized(self) -> str:
        return storage.join(self.work, "featurized")

    @property
    def result(self) -> str:
        return storage.join(self.work, "result")

    @property
    def run_file(self) -> str:
        return storage.join(self.work, "run.json")

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
    heartbeat: float              # epoch seconds of the last renewal

    @staticmethod
    def parse(data: bytes) -> Holder | None:
        try:
            value = json.loads(data)
            return Holder(str(value["run_id"]), str(value["host"]), int(value["pid"]),
                          str(value["started_at"]), float(value["heartbeat"]))
        except (ValueError, KeyError, TypeError):
            return None           # a torn or foreign file: nobody holds it

    def to_json(self) -> bytes:
        return json.dumps({**self.__dict__,
                           "expires_at": _iso(self.heartbeat + LEASE_TTL_S)}).encode()

    def alive(self, now: float) -> bool:
        if self.host == socket.gethostname() and (self.pid == os.getpid()
                                                  or not _pid_alive(self.pid)):
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

    def __init__(self, store: storage.Storage, layout: Layout, run_id: str) -> None:
        self.store, self.layout = store, layout
        self.holder = Holder(run_id, socket.gethostname(), os.getpid(), _iso(time.time()),
                             time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> Holder | None:
        try:
            return Holder.parse(self.store.read_bytes(self.layout.lease))
        except Exception:         # no lease (or unreadable: the output checks say why)
            return None

    def acquire(self, wait_for_stale: bool, sleep: Callable[[float], None] = time.sleep) -> None:
        """Take the lease or raise ConfigError naming the live run that holds it. With
        `wait_for_stale` (--resume: a retry of a run that just died, e.g. on another pod),
        wait up to one TTL for the holder's heartbeat to stop."""
        holder = self.current()
        deadline = time.time() + LEASE_TTL_S + HEARTBEAT_S
        while holder is not None and holder.alive(time.time()):
            if not wait_for_stale or time.time() > deadline:
                raise self._busy(holder)
            sleep(min(HEARTBEAT_S / 2, max(0.1, deadline - time.time())))
            renewed = self.current()
            if renewed is not None and renewed.heartbeat > holder.heartbeat:
                raise self._busy(renewed)      # renewed meanwhile: that run is alive
            holder = renewed
        self._write()
        sleep(SETTLE_S)
        winner = self.current()
        if winner is None or winner.run_id != self.holder.run_id:
            raise self._busy(winner or self.holder)
        self._thread = threading.Thread(target=self._renew, daemon=True, name="lease")
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S)
        try:
            holder = self.current()
            if holder is not None and holder.run_id == self.holder.run_id:
                self.store.delete(self.layout.lease)
        except Exception:         # best effort: an unreleased lease expires by itself
            pass

    def _write(self) -> None:
        self.holder = Holder(**{**self.holder.__dict__, "heartbeat": time.time()})
        self.store.write_bytes(self.layout.lease, self.holder.to_json())

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):     # a storage hiccup: the next beat retries
                self._write()

    def _busy(self, holder: Holder) -> ConfigError:
        return ConfigError(f"output {self.layout.output} is being written by run "
                           f"{holder.run_id} (host {holder.host}, pid {holder.pid}) since "
                           f"{holder.started_at}; wait for it to end, or write elsewhere")


# ---- preparing and committing ------------------------------------------------------------

def prepare(store: storage.Storage, layout: Layout, overwrite: bool, resume: bool,
            fingerprint: dict) -> None:
    """Refuse to clobber, clear a stale work area, or keep it for --resume. Call with the
    lease held."""
    try:
        names = [name for name in store.list_names(layout.output) if name != LEASE]
    except Exception as exc:
        raise ConfigError(f"cannot access output {layout.output}: {errors.cause(exc)}") from None
    interrupted = WORK in names
    if resume and interrupted:
        previous = (json.loads(store.read_bytes(layout.run_file))
                    if store.exists(layout.run_file) else None)
        if previous != fingerprint:
            different = sorted(key for key in fingerprint
                               if (previous or {}).get(key) != fingerprint[key])
            raise ConfigError(f"{layout.output} holds a run with other settings "
                              f"({', '.join(different) or 'unknown'} differ); --resume needs "
                              f"the same --input, --weights, --engine, --precision, --limit "
                              f"and --sample-fraction (or use --overwrite)")
        return
    if resume and SUCCESS in names:
        raise ConfigError(f"{layout.output} is already complete; use --overwrite to redo it")
    if names and not (overwrite or resume):
        hint = ("it holds an interrupted run: pass --resume to continue it or --overwrite "
                "to start over" if names == [WORK] else "pass --overwrite to replace it")
        raise ConfigError(f"output {layout.output} is not empty; {hint}")
    try:
        if interrupted:
            store.delete(layout.work)
        store.mkdirs(layout.output)
        store.write_bytes(layout.run_file, json.dumps(fingerprint).encode())
    except Exception as exc:
        raise ConfigError(f"output {layout.output} is not writable: "
                          f"{errors.cause(exc)}") from None


def commit(store: storage.Storage, layout: Layout) -> None:
    """Move staged results into place; `_SUCCESS` last, so partial output never looks done."""
    _clear(store, layout)
    for name in ARTIFACTS:
        if store.exists(layout.staged(name)):
            store.rename(layout.staged(name), layout.final(name))
    store.write_bytes(layout.final(SUCCESS), b"")
    store.delete(layout.work)


def commit_failed(store: storage.Storage, layout: Layout, manifest: bytes) -> None:
    """A run that failed after featurizing: only its staged errors/ and a failed manifest
    replace the output (never a `_SUCCESS`); the work area goes."""
    _clear(store, layout)
    if store.exists(layout.staged("errors")):
        store.rename(layout.staged("errors"), layout.final("errors"))
    store.write_bytes(layout.final("manifest.json"), manifest)
    store.delete(layout.work)


def _clear(store: storage.Storage, layout: Layout) -> None:
    """Remove a previous run's marker first, then everything else it held (--overwrite
    replaces the output, stray files too), except this run's work area and lease."""
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
    except PermissionError:       # alive, another user's
        return True
    return True


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
