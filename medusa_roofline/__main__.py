"""``python -m medusa_roofline``: the command line (:mod:`medusa_roofline.cli`)."""

import sys

from .cli import main

sys.exit(main(prog="python -m medusa_roofline"))
