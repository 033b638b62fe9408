"""The exception types the entry points turn into a one-line message and a non-zero exit, and the
exit statuses of ``python -m medusa_roofline``."""

EXIT_DIFFERENT = 1  # ran, but the result differs (regenerate: a points CSV differs from the archive)
EXIT_BAD_INPUT = 2  # ConfigError: bad arguments, missing or unreadable input
EXIT_TAMPERED = 3  # IntegrityError: input that failed its integrity checks; nothing was written


class ConfigError(ValueError):
    """Bad user input: the message names the offending key or file and what is allowed."""


class MeasurementError(RuntimeError):
    """A measured table that must not be written: a timing that cannot be a duration, or an unknown status."""


class IntegrityError(ConfigError):
    """Input read back from disk that must not be trusted: a tampered or malformed archive, a path
    that would read or write outside its root. The message names the file (and member or line)."""
