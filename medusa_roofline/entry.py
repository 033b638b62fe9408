"""What every Snakemake script does around its one library call: log to the rule's log file.

Every job logs when its process started and when it ended (``job start`` / ``job end`` lines, epoch
seconds), so a run's own logs show which jobs ran at the same time: a measuring job must overlap no
other job of its run (``threads: measuring_threads()`` in ``workflow/rules/common.smk``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from .core.errors import ConfigError, MeasurementError

log = logging.getLogger("medusa_roofline")
START_LINE = "job start: process started at %.6f, script entered at %.6f (epoch seconds)"
END_LINE = "job end at %.6f (epoch seconds)"


def process_start_time() -> float:
    """Epoch seconds at which this process started (Linux: /proc, to the clock tick), else now.

    The job's imports (torch, transformers: seconds of CPU) run before the script's code, so the
    job's interval starts here, not where the script begins."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


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
    log.info(START_LINE, process_start_time(), time.time())
    atexit.register(_log_end)  # as late as Python runs code: after the script, before logging shuts down
    log.info("rule %s: inputs %s", snakemake.rule, list(snakemake.input))
    try:
        yield log
    except (ConfigError, MeasurementError) as err:
        log.error("%s", err)
        sys.exit(1)
    log.info("wrote %s", list(snakemake.output))


def _log_end() -> None:
    log.info(END_LINE, time.time())
