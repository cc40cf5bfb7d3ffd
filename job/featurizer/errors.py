"""User-facing errors: one line that says what went wrong and what to do.

Errors travel as exceptions with their cause chain; only the CLI turns them into one line
and an exit code (cli.main). `cause` digs the innermost real cause out of a Java/Py4J or
Python exception chain, so a failed Spark job reads as "No space left on device", not as
the line of PySpark source that re-raised it.
"""

from __future__ import annotations

import re
import signal


class FeaturizerError(Exception):
    """A failure the user can act on; the CLI prints it as one line, no traceback."""

    exit_code = 1


class ConfigError(FeaturizerError):
    """Bad options, paths or credentials, detected before Spark work starts."""

    exit_code = 2


class Stopped(BaseException):
    """The run was stopped by a signal (SIGINT: Ctrl-C, SIGTERM: e.g. a pod's deletion).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it;
    the exit code is the shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum
        self.detail = ""  # what to do next (the pipeline fills it in)


# Java exceptions that only wrap another one: their message is not the cause.
_WRAPPERS = re.compile(
    r"(SparkException|StreamingQueryException|ExecutionException|"
    r"InvocationTargetException|UncheckedIOException|"
    r"SparkUpgradeException|Py4JJavaError|PythonException)$"
)
# "org.apache.spark.SparkException: [CODE] text", "java.io.IOException: text", ...
_CLASS_PREFIX = re.compile(r"^(?:[a-z_][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error)?:\s*")
_ERROR_CLASS = re.compile(r"^\[[A-Z_.]+\]\s*")


def cause(exc: BaseException, limit: int = 300) -> str:
    """The innermost meaningful cause of `exc`, cleaned, on one line."""
    for name, message in reversed(_java_chain(exc)):  # innermost first
        found = _innermost_in_text(message)
        if found:
            return _one_line(found, limit)
        if message.strip() and not _WRAPPERS.search(name):
            return _one_line(message, limit)
    while exc.__cause__ is not None or (
        exc.__context__ is not None and not exc.__suppress_context__
    ):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    return _one_line(_innermost_in_text(text) or text.strip() or type(exc).__name__, limit)


def _java_chain(exc: BaseException) -> list[tuple[str, str]]:
    """(class name, message) of the Java Throwable behind a Py4J/PySpark exception and
    of each of its causes, outermost first; [] for a Python exception."""
    throwable = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    chain: list[tuple[str, str]] = []
    try:
        while throwable is not None and len(chain) < 50:
            chain.append((str(throwable.getClass().getName()), str(throwable.getMessage() or "")))
            throwable = throwable.getCause()
    except Exception:  # the JVM is gone: what we have, or the Python text
        pass
    return chain


def _innermost_in_text(text: str) -> str | None:
    """The innermost cause written out in a message: the last "Caused by:" of a Java stack
    trace, or the exception line ending a Python traceback (a task's, or a foreachBatch
    function's), looking through Py4J's "An error occurred while calling" to its cause."""
    caused = re.findall(r"^\s*Caused by: (.+)$", text, re.M)
    if caused:
        return caused[-1]
    if "Traceback (most recent call last)" not in text:
        return None
    lines = text.split("Traceback (most recent call last)")[-1].splitlines()
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index].strip()
        if not re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line):
            continue
        if line.startswith("py4j.protocol.Py4JJavaError"):
            java = [
                rest.strip()[1:].strip()
                for rest in lines[index + 1 :]
                if rest.strip().startswith(": ")
            ]
            return java[0] if java else line
        return line
    return None


def _one_line(text: str, limit: int) -> str:
    first = next((line.strip() for line in text.strip().splitlines() if line.strip()), text)
    for _ in range(3):  # nested "Class: Class: [CODE] message"
        first = _ERROR_CLASS.sub("", _CLASS_PREFIX.sub("", first))
    return first[:limit]
