"""The Python worker daemon of a local run (`spark.python.daemon.module`): PySpark's own,
with stderr sent to the run's log file (FEATURIZER_WORKER_LOG).

Workers of a local run write to the terminal the user is watching: a worker that Spark
tears down after a failed task prints its BrokenPipeError traceback there, after the one
line that says what went wrong. Spark already reports every task failure in its log, so
the workers' stderr joins it in the log file; `--verbose` keeps PySpark's daemon as is.
"""

from __future__ import annotations

import os


def main() -> None:
    log = os.environ.get("FEATURIZER_WORKER_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    from pyspark import daemon

    daemon.manager()


if __name__ == "__main__":
    main()
