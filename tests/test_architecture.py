"""The package's shape, as docs/architecture.md draws it: stages that import only earlier stages, small modules."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from conftest import REPO
from medusa_roofline.core import codedeps

STAGES = ["core", "models", "analytic", "decoding", "measure", "results", "repro"]
"""Earliest first; a module may import its own stage and earlier ones only. Top-level modules (cli,
entry, __main__) come last; the package's __init__ first."""
PACKAGE = REPO / "medusa_roofline"
MODULES = sorted(PACKAGE.rglob("*.py"))
PARSE_TIME = ["medusa_roofline.repro.settings", "medusa_roofline.results.render"]
"""Modules the Snakefile imports while it is parsed: no torch, transformers or matplotlib there."""


def stage(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # medusa_roofline/__init__.py
    if parts[1] in STAGES:
        return STAGES.index(parts[1])
    return len(STAGES)  # cli, entry, __main__


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_run_from_later_stages_to_earlier_ones(path):
    me = codedeps.module_name(path)
    upward = [m for m in codedeps.imported_modules(path) if stage(m) > stage(me)]
    assert not upward, f"{me} imports {upward} from a later stage"


def test_no_module_is_large():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in MODULES}
    assert max(sizes.values()) <= 420, {k: v for k, v in sizes.items() if v > 420}


def heavy_imports(module: str, heavy: set[str]) -> list[str]:
    """Which of the ``heavy`` top-level packages importing ``module`` loads, in a fresh interpreter."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import {module}; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(heavy)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip())


@pytest.mark.parametrize("module", PARSE_TIME)
def test_parse_time_modules_stay_light(module):
    assert heavy_imports(module, {"torch", "transformers", "matplotlib"}) == []


@pytest.mark.slow  # a fresh interpreter per module, importing torch
@pytest.mark.parametrize("module,allowed", [("medusa_roofline.repro.archive", set()),
                                            ("medusa_roofline.measure.ceilings", {"torch"})])
def test_jobs_that_build_no_model_do_not_import_transformers(module, allowed):
    """The archive job needs only provenance's git fields and the ceilings job only its CPU name: importing
    transformers (seconds per job on 2 cores) there would be paid by every run for nothing."""
    assert heavy_imports(module, {"torch", "transformers"}) == sorted(allowed)
