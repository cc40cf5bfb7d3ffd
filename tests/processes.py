"""The processes of one session (a run started with `start_new_session=True`), from /proc;
waiting for a condition while a process runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Process:
    pid: int
    cmdline: bytes
    stat: list[str]  # /proc/PID/stat fields after the command name: state, ppid, ...
    status: str  # /proc/PID/status text (VmRSS, VmHWM, ...)


def session_processes(session: int) -> Iterator[Process]:
    """Snapshot of the live processes whose session id is `session` (vanished ones skipped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            yield Process(
                int(entry.name),
                (entry / "cmdline").read_bytes(),
                (entry / "stat").read_text().rsplit(")", 1)[1].split(),
                (entry / "status").read_text(),
            )
        except (OSError, ProcessLookupError):
            continue


def kill_session(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL every process of `process`'s session (started with `start_new_session=True`)
    until none is left, as when a machine or pod dies. Not just its process group: PySpark's
    worker daemon puts itself and its workers in a group of their own, and a worker killed
    only with the JVM's group lives on until the daemon notices (up to ~1 s), long enough to
    finish writing a file it had begun."""
    deadline = time.monotonic() + timeout
    while alive := [p.pid for p in session_processes(process.pid) if p.stat[0] != "Z"]:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait(timeout=timeout)
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {alive} of session {process.pid} outlived SIGKILL")
        time.sleep(0.05)
    process.wait(timeout=timeout)


# PySpark's worker daemon, or featurizer's wrapper of it (local runs: featurizer.worker_daemon).
WORKER_DAEMONS = (b"pyspark.daemon", b"featurizer.worker_daemon")


def is_python_worker(cmdline: bytes) -> bool:
    """A Python worker (or its daemon) of a run, by its command line: the daemon's module
    as an argument of its own (`python -m featurizer.worker_daemon`). Not a substring: the
    JVM's own arguments name the module too (spark.python.daemon.module=...), and so does
    a process the JVM is spawning (Hadoop's `chmod` under umask 077) until it execs: a test
    killed one of those for a busy Python worker and failed the run."""
    arguments = cmdline.split(b"\0")
    return any(daemon in arguments for daemon in WORKER_DAEMONS)


# SIGINT back to its default disposition, then exec the real command. A suite started with
# SIGINT ignored (`make test &` from a script) passes SIG_IGN on to its children, and a Python
# child then never raises KeyboardInterrupt. An exec rather than preexec_fn, which is unsafe
# in a process with threads (the test process has Spark's).
_RESET_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def with_default_sigint(argv: list[str]) -> list[str]:
    """argv run with SIGINT at its default disposition, whatever this process inherited."""
    return [sys.executable, "-c", _RESET_SIGINT, *argv]


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.5,
    process: subprocess.Popen | None = None,
) -> T:
    """condition()'s first true result, checked every `interval` s; an AssertionError naming
    `what` after `timeout` s, or as soon as `process` (if given) has ended."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.poll() is not None:
            said = process.stdout.read()[-3000:] if process.stdout is not None else ""
            said = said.decode(errors="replace") if isinstance(said, bytes) else said
            raise AssertionError(
                f"the process ended (exit {process.returncode}) before {what}"
                + (f":\n{said}" if said else "")
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
