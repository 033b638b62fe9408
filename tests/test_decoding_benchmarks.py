"""benchmarks/build_time.py, benchmarks/step_closure.py and benchmarks/wrapper_overhead.py run end to end on
small settings (their targets are reported by the scripts, never asserted here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # runs the build benchmark (seconds)
def test_build_time_reports_parts_and_target(capsys):
    assert load("build_time").main(["--model", "tiny", "--repeats", "2", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert out.count("  build ") == 2 and "parameters on ['cpu']" in out
    assert "vs target 8 s: " in out and "peak host RSS" in out


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True])
def test_step_closure_reports_every_point_and_mode(capsys, tmp_path, strict):
    out_csv = tmp_path / "closure.csv"
    argv = ["--modes", "ar,medusa-4", "--batch", "1", "--kv-len", "8,16", "--reps", "2", "--warmup", "1",
            "--threads", "1", "--out", str(out_csv)] + (["--strict"] if strict else [])
    rc = load("step_closure").main(argv)
    table = pd.read_csv(out_csv)
    assert len(table) == 4 and set(table["mode"]) == {"ar", "medusa-4"}
    assert (table["remainder_s"] > 0).all() and (table["ops_s"] > 0).all()
    text = capsys.readouterr().out
    assert "per mode" in text and "target: median |gap| <= 10%" in text
    assert rc == (1 if strict and "MISSED" in text else 0)


def test_wrapper_overhead_times_all_three_and_restores_threads(capsys):
    import torch

    threads = torch.get_num_threads()
    assert load("wrapper_overhead").main(["--calls", "20", "--rounds", "3"]) == 0
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out
    for line in ("plain call", "forward wrapper", "forward hooks"):
        assert line in out
