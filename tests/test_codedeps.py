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


PRELOADED = ("torch", "transformers", "numpy", "pandas", "matplotlib", "matplotlib.pyplot", "seaborn", "yaml", "tqdm",
             "safetensors", "transformers.models.llama.modeling_llama", "torch.nn.attention.flex_attention")
"""Third-party libraries the package imports: loaded once, before the fork (they never import the package). With
the Llama modelling and FlexAttention modules among them, the measuring scripts' children do not each import
them again: the probe takes 11 CPU-s instead of 23."""

PROBE = """
import json, os, sys
sys.path.insert(0, {repo!r})
import matplotlib
matplotlib.use("Agg")
for name in {preloaded!r}:
    __import__(name)
assert not [m for m in sys.modules if m.split(".")[0] == "medusa_roofline"]
found = {{}}
for name, imports in {scripts!r}.items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh package, only the script's own import statements
        os.close(read)
        exec(imports, {{}})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "medusa_roofline")
        os.write(write, json.dumps(loaded).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        found[name] = json.loads(pipe.read())
    assert os.waitpid(pid, 0)[1] == 0, name
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def loaded_modules() -> dict[str, set[str]]:
    """Per script: the package modules an interpreter holds after running the script's own import statements.
    One interpreter loads the heavy third-party libraries once, then forks a child per script, so each child
    starts without any package module, as a fresh interpreter would."""
    scripts = {script.name: "\n".join(line for line in script.read_text().splitlines()
                                      if line.startswith(("from medusa_roofline", "import medusa_roofline")))
               for script in SCRIPTS}
    code = PROBE.format(repo=str(REPO), preloaded=PRELOADED, scripts=scripts)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return {name: set(modules) for name, modules in json.loads(out.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
@pytest.mark.slow  # probes every script's imports in a fresh interpreter (tens of seconds)
def test_derived_code_inputs_cover_every_module_the_script_loads(script, loaded_modules):
    derived = set(codedeps.module_closure(script))
    assert "medusa_roofline" in loaded_modules[script.name]  # the probe saw the script's imports
    missing = loaded_modules[script.name] - derived
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
    assert codedeps.module_closure(script) == [
        "medusa_roofline", "medusa_roofline.base", "medusa_roofline.sub", "medusa_roofline.sub.leaf",
        "medusa_roofline.sub.top",
    ]


def test_code_digest_changes_with_an_imported_module(tmp_path, monkeypatch):
    pkg = tmp_path / "medusa_roofline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import Y\n")
    (pkg / "b.py").write_text("Y = 1\n")
    (pkg / "c.py").write_text("Z = 1\n")
    monkeypatch.setattr(codedeps, "PACKAGE_DIR", pkg)
    before = codedeps.code_digest("medusa_roofline.a")
    (pkg / "c.py").write_text("Z = 2\n")  # not imported by a: same digest
    assert codedeps.code_digest("medusa_roofline.a") == before
    (pkg / "b.py").write_text("Y = 2\n")
    assert codedeps.code_digest("medusa_roofline.a") != before
    (pkg / "b.py").write_text("from .c import Z\n")  # an edited file is read again: a now reaches c
    assert "medusa_roofline.c" in codedeps.module_closure(pkg / "a.py")
