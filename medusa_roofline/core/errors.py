"""The two exception types the entry points turn into a one-line message and a non-zero exit."""


class ConfigError(ValueError):
    """Bad user input: the message names the offending key or file and what is allowed."""


class MeasurementError(RuntimeError):
    """A measured table that must not be written: a timing that cannot be a duration, or an unknown status."""
