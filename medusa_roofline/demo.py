"""A self-contained demonstration that Medusa accepts tokens: everything trained and measured locally.

1. **Base model.** A tiny Llama-style model trained on a synthetic language
   (:mod:`.models.synthetic`, :mod:`.models.train`), saved with ``save_pretrained`` (safetensors +
   config.json + a character tokenizer).
2. **Heads.** Medusa-1 heads trained on the frozen base model's own greedy continuations
   (:mod:`.decoding.train_heads`), saved as ``medusa_lm_head.safetensors`` in the reference layout.
3. **Acceptance.** Per-head, per-rank acceptance measured on held-out plain-text prompts, and the
   tokens per step real Medusa generation reaches with trees built from that table
   (:mod:`.decoding.acceptance`).
4. **Sweep and speedup.** The measured sweep (:mod:`.measure.sweep`) on the trained checkpoint with
   trees from the measured table, and the measured speedup with both acceptance sources (measured
   table, real generation) (:mod:`.results.speedup`).

Seeded and deterministic (on one machine and thread count); nothing is downloaded. Every stage runs
with ``threads`` torch threads (default 1): a model this small gains nothing from a second thread,
and on a shared 2-core machine two spinning OpenMP threads per process make it many times slower. The Snakemake
rules of ``workflow/rules/demo.smk`` run steps 1-3 (1-2 from :mod:`.demo_train`, which times nothing; the
workflow's own sweep and figures do 4);
``python -m medusa_roofline demo --out DIR`` runs all four in one process.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .core.io import write_csv, write_json
from .decoding import acceptance
from .demo_train import HEADS_FILE, DemoSpec, build_base, build_heads, torch_threads, write_prompts
from .measure.sweep import run_sweep
from .results.speedup import MEASURED_TABLE, measured_speedup

def measure(spec: DemoSpec, model_dir, heads_path, prompts_path) -> acceptance.AcceptanceResult:
    """Acceptance table and real tokens per step of the demo's model, heads and prompt file."""
    with torch_threads(spec.threads):
        return acceptance.acceptance_from_files(
            str(model_dir), heads_path, prompts_path, seed=spec.seed, max_new_tokens=spec.new_tokens,
            top_k=spec.top_k, candidates=spec.candidates)


def sweep(spec: DemoSpec, model_dir, table_path, progress: bool = False) -> pd.DataFrame:
    """The measured sweep (ar and every tree size) of the demo checkpoint, trees from the measured table."""
    modes = ["ar"] + [f"medusa-{c}" for c in spec.candidates]
    with torch_threads(spec.threads):
        return pd.concat([run_sweep(str(model_dir), mode, list(spec.sweep_batch), list(spec.sweep_kv_len), "float32",
                                    "cpu", reps=spec.reps, warmup=spec.warmup, acceptance_table=str(table_path),
                                    seed=spec.seed, progress=progress) for mode in modes], ignore_index=True)


def run_demo(out, spec: DemoSpec = DemoSpec(), say=print) -> dict:
    """The whole demo into ``out``: model/, heads, prompts, acceptance, generation, measured, speedup."""
    out = Path(out)
    paths = {name: out / name for name in ("model", HEADS_FILE, "prompts.txt", "acceptance.csv",
                                           "generation.csv", "acceptance.json", "measured.csv", "speedup.csv")}
    t0 = time.perf_counter()
    summary = {"spec": spec.to_dict(), "stages": {}}
    say(f"training the base model ({spec.base.layers} layers, hidden {spec.base.hidden}, {spec.base.steps} steps) ...")
    summary["stages"]["base"] = build_base(spec, paths["model"])
    say(f"training {spec.heads.num_heads} Medusa heads on the base model's greedy continuations ...")
    summary["stages"]["heads"] = build_heads(spec, paths["model"], paths[HEADS_FILE])
    write_prompts(spec, paths["prompts.txt"])
    say(f"measuring acceptance on {spec.eval_prompts} held-out prompts ...")
    t = time.perf_counter()
    result = measure(spec, paths["model"], paths[HEADS_FILE], paths["prompts.txt"])
    acceptance.write_result(result, paths["acceptance.csv"], paths["generation.csv"], paths["acceptance.json"])
    summary["stages"]["acceptance"] = {"seconds": time.perf_counter() - t}
    say(f"timing decode steps (ar, medusa-{'/'.join(map(str, spec.candidates))}) ...")
    t = time.perf_counter()
    measured = sweep(spec, paths["model"], paths["acceptance.csv"])
    write_csv(measured, paths["measured.csv"])
    speedup = measured_speedup(measured, result.table.pivot(index="head", columns="rank", values="accuracy")
                               .to_numpy(), acceptance=MEASURED_TABLE, generation=result.generation)
    write_csv(speedup, paths["speedup.csv"])
    summary["stages"]["sweep"] = {"seconds": time.perf_counter() - t}
    summary["seconds"] = time.perf_counter() - t0
    tree = result.generation.set_index("candidates").loc[spec.tree]
    summary["default_tree"] = {"candidates": spec.tree, "tokens_per_step": float(tree["tokens_per_step"]),
                               "expected_tokens_per_step": float(tree["expected_tokens_per_step"]),
                               "identical_to_greedy": bool(tree["identical_to_greedy"])}
    summary["files"] = {k: str(v) for k, v in paths.items()}
    write_json(summary, out / "summary.json")
    return {"summary": summary, "table": result.table, "generation": result.generation, "speedup": speedup}
