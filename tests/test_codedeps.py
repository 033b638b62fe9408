"""Rule code inputs come from the import graph: the derived list holds every module a script really loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from medusa_roofline.core import codedeps

SCRIPTS = sorted((REPO / "scripts").glob("*.py"))


def loaded_modules(script: Path) -> set[str]:
    """Package modules a fresh interpreter holds after running the script's own import statements."""
    imports = [line for line in script.read_text().splitlines() if line.startswith(("from medusa_roofline", "import medusa_roofline"))]
    code = "\n".join([
        "import json, sys",
        f"sys.path.insert(0, {str(REPO)!r})",
        *imports,
        'print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "medusa_roofline")))',
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_derived_code_inputs_cover_every_module_the_script_loads(script):
    derived = set(codedeps.module_closure(script))
    missing = loaded_modules(script) - derived
    assert not missing, f"{script.name}: the rule's code inputs miss {sorted(missing)}"
    files = codedeps.module_files(script)
    assert files == sorted(files) and all(Path(f).is_file() for f in files)


def test_relative_function_level_and_package_imports_are_followed(tmp_path, monkeypatch):
    """A fake package: a relative import inside a function, ``from . import x`` and a parent package."""
    pkg = tmp_path / "medusa_roofline"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "base.py").write_text("X = 1\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..base import X\n    return X\n")
    (pkg / "sub" / "top.py").write_text("from . import leaf\nimport numpy\n")
    script = tmp_path / "script.py"
    script.write_text("from medusa_roofline.sub.top import leaf\n")
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", pkg)
    codedeps._closure.cache_clear()
    try:
        assert codedeps.module_closure(script) == [
            "medusa_roofline", "medusa_roofline.base", "medusa_roofline.sub", "medusa_roofline.sub.leaf",
            "medusa_roofline.sub.top",
        ]
    finally:
        codedeps._closure.cache_clear()


def test_code_digest_changes_with_an_imported_module(tmp_path, monkeypatch):
    pkg = tmp_path / "medusa_roofline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import Y\n")
    (pkg / "b.py").write_text("Y = 1\n")
    (pkg / "c.py").write_text("Z = 1\n")
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", pkg)
    codedeps._closure.cache_clear()
    try:
        before = codedeps.code_digest("medusa_roofline.a")
        (pkg / "c.py").write_text("Z = 2\n")  # not imported by a: same digest
        assert codedeps.code_digest("medusa_roofline.a") == before
        (pkg / "b.py").write_text("Y = 2\n")
        assert codedeps.code_digest("medusa_roofline.a") != before
    finally:
        codedeps._closure.cache_clear()
