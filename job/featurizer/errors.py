"""User-facing errors: one line that says what went wrong and what to do."""


class FeaturizerError(Exception):
    """A failure the user can act on; the CLI prints it as one line, no traceback."""

    exit_code = 1


class ConfigError(FeaturizerError):
    """Bad options, paths or credentials, detected before Spark work starts."""

    exit_code = 2
