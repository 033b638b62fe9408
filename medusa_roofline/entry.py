"""What every Snakemake script does around its one library call: log to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from .core.errors import ConfigError, MeasurementError

log = logging.getLogger("medusa_roofline")


@contextlib.contextmanager
def logged(snakemake):
    """Log to the rule's `log:` file and stderr; a ConfigError becomes a one-line message and exit 1."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    log.info("rule %s: inputs %s", snakemake.rule, list(snakemake.input))
    try:
        yield log
    except (ConfigError, MeasurementError) as err:
        log.error("%s", err)
        sys.exit(1)
    log.info("wrote %s", list(snakemake.output))
