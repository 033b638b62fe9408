"""medusa-roofline: where LLM decoding sits on the roofline, and why Medusa tree decoding moves it.

Stages, each a subpackage; imports run from later stages to earlier ones only (docs/architecture.md):
core -> models -> analytic -> decoding -> measure -> results -> repro, and the entry points on top.
"""

import os

__version__ = "0.1.0"

# Never reach a hub: every model file is read locally. Set before any module imports transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
