"""The measured sweep: time a decode step of the real (HF) model, per op and as a whole.

For one mode (``"ar"``, ``"medusa-N"`` with N tree tokens root included, or ``"tree-NAME"`` for a tree
file) and a grid of (batch, kv_len) points:

* **KV cache.** A :class:`~medusa_roofline.decoding.kv_cache.PreallocatedCache` of capacity
  ``kv_len + q_len`` whose first ``kv_len`` slots are filled with random K/V *directly* rather than
  by prefilling random tokens. Why: a decode step's cost depends only on the cache's shape and
  dtype, never on its values; prefill through the eager model would cost O(kv_len) model work per
  point and materialise the quadratic ``[b, heads, kv_len, kv_len]`` score matrix (Llama-33B, b=16,
  kv_len=2048, fp16: 7 GB), dwarfing the step we want to time and causing spurious OOMs. The step
  writes its q_len new K/V in place (as Medusa's reference and gpt-fast do) and attends over the
  buffer itself, so no step copies the cache (Hugging Face's ``DynamicCache`` appends with
  ``torch.cat``, copying every layer's whole cache each step).
* **Step.** ``ar``: one token per row. ``medusa-N``: the N-token tree built with
  ``tree.build_tree`` on the acceptance table, fed through the model with the additive 4-D tree
  mask and tree position ids on the cache, then the base LM head on all N positions (the base
  model verifies every candidate) and the Medusa heads on the final hidden states of all N tree
  positions, as Medusa's reference ``tree_decoding`` does (``medusa_heads="tree"``), or of one
  position per sequence (``"accepted"``); the ``heads_tokens`` column says which ran. Both modes
  pass a precomputed 4-D additive mask (zeros ``[b,1,1,kv_len+1]`` for ar, identical to what eager's causal-mask builder
  makes for one query token), so neither pays HF mask construction inside the timed step.
  The transformer is run as ``model.model(...)`` then ``model.lm_head(...)``, which is exactly
  ``LlamaForCausalLM.forward`` with ``logits_to_keep=0``; the hidden states also feed the heads.
* **Cache restore.** After every repetition the cache length is set back to ``kv_len`` (nothing
  moves; the next step overwrites the same slots) after checking that the step left every layer at
  ``kv_len + q_len``, so every rep sees the same cache.
* **Whole step** (op ``step``) is timed in its own pass with no wrappers and no active timer, so
  instrumentation cannot inflate it. It runs the same attention code as the per-op pass
  (:func:`timed_attention_forward`, the project's eager qk/softmax/pv), not Hugging Face's eager
  attention, so that the per-op rows describe the step that was timed.
* **Per-op** timings come from a second pass: timed ``forward`` wrappers
  (:class:`~.instrument.timed_forwards`, cheaper than forward hooks) on the ``nn.Linear`` modules
  ``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj`` and ``lm_head``, on the RMSNorms
  (``input_norm``, ``post_attn_norm``, ``final_norm``) and the embedding (``embedding``), an explicit
  interval around the Medusa heads (``medusa_heads``), and ``qk``, ``softmax``, ``pv`` timed *inside*
  attention by :func:`timed_attention_forward`, registered with transformers' ``AttentionInterface`` as
  ``"roofline_timed"``. Per-layer ops (scope ``layer``) run once per decoder layer; for each
  repetition we take the **mean over the instantiated layers** (the time of that op in one decoder
  layer), then report median/p10/p90 of those per-rep means across
  reps. ``calls`` says how many times the op runs per step (= ``layers`` for per-layer ops).
* **Remainder** (op ``remainder``, :data:`~medusa_roofline.analytic.costmodel.REMAINDER_OP`): per
  repetition of the per-op pass, the whole pass minus every op interval: RoPE, residual adds,
  SiLU·up, the in-place KV write, mask handling, the heads' glue, and the
  instrumentation's own cost. Per-op rows x ``calls`` + ``remainder`` therefore add up to the
  instrumented step; how close that comes to the uninstrumented ``step`` is checked by
  :func:`~.table.step_closure` (``benchmarks/step_closure.py``).
* **Launch and wrapper overhead, recorded.** At small sizes a per-op interval is mostly the host
  running the wrapper and enqueueing the kernel (tens of microseconds against a few of kernel). Each
  row keeps it beside the time instead of hiding it: ``host_s_median`` (CUDA: host seconds between
  the row's two marks; ``remainder``: the same difference as its device time, in host seconds) and
  ``launch_floor_s`` (per-op rows and ``remainder``: a 1x1 ``nn.Linear`` through the same wrapper and
  timer, :func:`~.instrument.instrumented_floor`; ``step``: a one-element kernel through
  ``time_callable``), measured at every point after its timings. ``compiles`` stays empty (eager
  attention compiles nothing).
* **Cache flush.** Every timed pass of both kinds (``step`` and instrumented) runs after the same
  flush, ``flush_l2`` being ``True``/``False`` or a variant of :data:`~.timing.FLUSH_MODES`.
* **OOM.** ``torch.OutOfMemoryError`` (CUDA) or ``MemoryError`` at a point records every op of
  that point with status ``oom`` and NaN times. ``max_memory_bytes`` simulates a memory cap: a
  point whose :func:`estimate_working_set_bytes` exceeds it is recorded ``oom`` without running.
* **Checkpoints.** With ``checkpoint_dir`` every measured point (ok or oom) is saved as soon as it
  is measured (:mod:`.checkpoint`), after :func:`~.table.validate_measured` has accepted it, and a
  rerun of the same measurement reuses the saved points instead of measuring them again.

Every (op, batch, kv_len) becomes one row with the columns in :data:`COLUMNS`.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analytic.costmodel import REMAINDER_OP, measured_ops, step_shape
from ..analytic.memory import estimate_working_set_bytes
from ..core.codedeps import code_digest
from ..core.devices import as_device, dtype_name, free_memory, is_oom, resolve_device, resolve_dtype
from ..core.errors import ConfigError
from ..core.provenance import provenance
from ..decoding.heads import random_heads
from ..decoding.tree import acceptance_array, tree_paths_for
from ..decoding.tree_buffers import tree_buffers
from ..models.load import build_model
from ..models.source import instantiated_layers, model_dims, model_name
from . import checkpoint
from .grid import parse_mode
from .instrument import (attention_implementation, instrumented_floor, register_timed_attention, timed_linears,
                         timed_modules)
from .op_timer import OpTimer, activate, maybe_op
from .step import DecodeStep
from .table import COLUMNS, validate_measured
from .timing import CPU_FLUSH_BYTES, CUDA_FLUSH_BYTES, Stats, flush_mode, time_callable, tiny_kernel_floor


def _row(base: dict, op: str, stats: Stats | None, status: str, calls: int, scope: str,
         floor: float = math.nan) -> dict:
    row = dict(base)
    row.update(op=op, scope=scope, calls=calls, status=status, launch_floor_s=floor)
    if stats is None:
        row.update(time_s_median=math.nan, time_s_p10=math.nan, time_s_p90=math.nan, host_s_median=math.nan)
    else:
        row.update(time_s_median=stats.median, time_s_p10=stats.p10, time_s_p90=stats.p90,
                   host_s_median=math.nan if stats.host_median is None else stats.host_median)
    return row


INSTRUMENTED_STEP = "_instrumented_step"
"""The whole instrumented pass, timed around the op intervals only to derive ``remainder``; never a row."""


def measure_point(step: DecodeStep, device, reps: int, warmup: int, flush_l2: bool | str = True) -> dict[str, Stats]:
    """Time one point: the uninstrumented step and the per-op pass in alternating rounds, then the launch
    floors of both paths. Returns {op: Stats} plus ``_calls`` and ``_floors`` ({"step": s, "op": s}).

    Each round runs the whole step once with no wrappers and no active timer (``step``), then once
    instrumented (op intervals, and one interval around the whole pass). Alternating keeps both
    passes under the same machine conditions, so their comparison is fair. Both run the same
    attention code (:func:`timed_attention_forward`, whose intervals record only while a timer is
    active), so the per-op rows plus ``remainder`` describe the step that was timed. ``remainder``
    is, per round, the instrumented pass minus every op interval; what instrumentation adds (wrappers,
    timer calls) lands there too, which is why the closure against ``step``
    (:func:`~.table.step_closure`) is a check and not an identity. Both timed passes of a round
    run after a cache flush of the mode ``flush_l2`` names (:func:`~.timing.flush_mode`).
    """
    model = step.model
    name = register_timed_attention()
    timer = OpTimer(device)
    cuda = as_device(device).type == "cuda"
    step_samples, step_host = [], []

    def instrumented():
        with maybe_op(INSTRUMENTED_STEP):
            step.step()  # its outputs are freed inside the interval, as in time_callable's

    with torch.inference_mode(), attention_implementation(model, name):
        for i in range(warmup + reps):
            timed = i >= warmup
            if timed:
                stats = time_callable(step.step, device, 0, 1, flush_l2, after=step.reset, op="step")
                step_samples.append(stats.median)
                step_host.append(stats.host_median)
            else:
                step.step()
                step.reset()
            # wrappers only here: they would cost the plain step too
            with timed_linears(model), timed_modules(model), activate(timer):
                # one call: untimed in a warm-up round (no rep open, nothing recorded), else one flushed rep
                timer.run(instrumented, reps=int(timed), warmup=int(not timed), flush_l2=flush_l2, after=step.reset)
    threads = None if cuda else torch.get_num_threads()
    results = {"step": Stats.from_samples(step_samples, op="step", threads=threads, host=step_host if cuda else None)}
    results.update(timer.stats(exclude=(INSTRUMENTED_STEP,)))
    results[REMAINDER_OP] = timer.uncovered(INSTRUMENTED_STEP)
    results["_calls"] = {op: n for op, n in timer.counts().items() if op != INSTRUMENTED_STEP}
    dtype = next(model.parameters()).dtype
    results["_floors"] = {"step": tiny_kernel_floor(device, reps, warmup, flush_l2).median,
                          "op": instrumented_floor(device, dtype, reps, warmup, flush_l2).median}
    return results


def run_sweep(model_source: str, mode: str, batches, kv_lens, dtype="auto", device="cpu", layers: int | None = None,
              reps: int = 10, warmup: int = 3, acceptance_table=None, max_memory_bytes: int | None = None,
              seed: int = 0, progress: bool = True, flush_l2: bool | str = True, checkpoint_dir=None,
              tree=None, medusa_heads: str = "tree"):
    """Measure one mode over the (batch, kv_len) grid; one row per (op, batch, kv_len).

    The grid and settings come resolved and checked (:mod:`medusa_roofline.repro.settings`); points run in
    the order given. ``acceptance_table``: an array ``[num_heads, top_k]``, a CSV path, or None for the default
    table (medusa modes only; the number of Medusa heads is its row count). ``layers``: decoder
    layers to instantiate (default: all). Rows are in grid order (batch, then kv_len).

    ``tree``: the tree a medusa mode runs, a :class:`~medusa_roofline.decoding.tree.Tree` or a tree file
    (default: the greedy tree of N nodes from the acceptance table); its node count must be the mode's
    N. Its name fills the ``tree`` column (``greedy-N`` for a built tree, empty for ar).

    ``checkpoint_dir``: save every measured point there (:mod:`.checkpoint`) and reuse points a
    killed run of the same measurement saved; the caller removes it once the table is written.
    ``medusa_heads``: where a Medusa step runs its heads (``tree`` or ``accepted``,
    :func:`~medusa_roofline.analytic.costmodel.step_shape`).
    """
    dims = model_dims(model_source)
    n_layers = instantiated_layers(dims, layers, model_source)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    elem = torch.tensor([], dtype=torch_dtype).element_size()

    buffers, num_heads, chosen, table = None, 0, None, None
    limit = dims.max_positions or None
    if tree is not None:  # random heads propose from the whole vocabulary; one head per tree depth, as many as
        table = acceptance_array(acceptance_table)  # the table has
        chosen = tree_paths_for(tree, num_heads=int(table.shape[0]), top_k=dims.vocab, max_nodes=limit)
    m = parse_mode(mode, trees={chosen.name: chosen.candidates} if chosen else None)
    if tree is not None and m.phase != "medusa":
        raise ConfigError(f"tree: mode {m.name} runs no tree; give a tree with a medusa-N or tree-NAME mode")
    if m.phase == "medusa":
        table = acceptance_array(acceptance_table) if table is None else table
        num_heads = int(table.shape[0])
        if chosen is None:
            chosen = tree_paths_for(m.q_len, table, max_nodes=limit)
        if chosen.candidates != m.q_len:
            raise ConfigError(f"tree: {chosen.name} has {chosen.candidates} nodes (root included) but mode {m.name} "
                              f"runs {m.q_len}; use mode medusa-{chosen.candidates} or tree-{chosen.name}")
        buffers = tree_buffers(chosen.paths, dev)

    flush_bytes = 0
    if flush_mode(flush_l2):
        flush_bytes = CUDA_FLUSH_BYTES if dev.type == "cuda" else CPU_FLUSH_BYTES
    points = [(b, s) for b in batches for s in kv_lens]
    estimates = {
        (b, s): estimate_working_set_bytes(dims, n_layers, b, s, m.q_len, elem, num_heads, flush_bytes)
        for b, s in points
    }
    runnable = [p for p in points if max_memory_bytes is None or estimates[p] <= max_memory_bytes]

    prov = provenance(dev)
    common = {
        "bench": "sweep", "model": model_name(model_source), "device": str(dev), "device_name": prov["device_name"],
        "mode": m.name, "phase": m.phase, "candidates": m.candidates, "tree": chosen.name if chosen else "",
        "q_len": m.q_len, "layers": n_layers,
        "heads_tokens": step_shape(m.phase, m.q_len, 0, medusa_heads).heads_tokens,
        "heads": dims.heads, "kv_heads": dims.kv_heads, "head_dim": dims.head_dim,
        "dtype": dtype_name(torch_dtype), "attention_backend": "eager", "kernel": "eager", "reps": reps,
        "warmup": warmup, "threads": torch.get_num_threads(),
        "torch": prov["torch"], "transformers": prov["transformers"], "cuda": prov["cuda"],
        "git_commit": prov["git_commit"], "git_dirty": prov["git_dirty"], "hostname": prov["hostname"], "seed": seed,
    }

    ops = measured_ops(m.phase)
    key = {
        "what": "sweep", "model": checkpoint.model_fingerprint(model_source), "mode": m.name,
        "dtype": common["dtype"], "device": common["device"], "device_name": common["device_name"],
        "layers": n_layers, "reps": reps, "warmup": warmup, "seed": seed, "flush_l2": flush_mode(flush_l2),
        "max_memory_bytes": max_memory_bytes, "threads": common["threads"], "heads_tokens": common["heads_tokens"],
        "acceptance": checkpoint.acceptance_fingerprint(acceptance_table) if m.phase == "medusa" else None,
        "tree": [list(p) for p in chosen.paths] if chosen else None,
        "torch": prov["torch"], "transformers": prov["transformers"], "cuda": prov["cuda"],
        "code": code_digest(__name__),
    }
    ckpt = checkpoint.open_checkpoint(checkpoint_dir, key)
    saved = {}
    if ckpt is not None:
        for p in runnable:
            point_rows = ckpt.load(p)
            if point_rows is not None:
                saved[p] = point_rows
        ckpt.log_resumed(len(runnable), f"sweep {model_name(model_source)} {m.name}")
    to_measure = [p for p in runnable if p not in saved]

    model = heads = None
    rows = []
    try:
        if to_measure:
            try:
                model = build_model(model_source, torch_dtype, dev, layers=layers, seed=seed, attn_implementation="eager")
                if m.phase == "medusa":
                    heads = random_heads(model, num_heads=num_heads, seed=seed)
            except Exception as exc:  # noqa: BLE001 - only OOM is recorded, everything else re-raised
                if not is_oom(exc):
                    raise
                model = heads = None
                runnable = list(saved)
        if model is None:
            free_memory(dev)
        bar = tqdm(points, desc=f"sweep {model_name(model_source)} {m.name}", disable=not progress, unit="pt")
        for b, s in bar:
            base = dict(common, batch=b, kv_len=s, keys=s + m.q_len, est_bytes=estimates[(b, s)])
            if (b, s) in saved:
                rows += saved[(b, s)]
                continue
            if (b, s) not in runnable:
                rows += [_row(base, op, None, "oom", n_layers if sc == "layer" else 1, sc) for op, sc in ops]
                continue
            step, oom = None, False
            try:
                step = DecodeStep(model, m, b, s, heads=heads, buffers=buffers, seed=seed, medusa_heads=medusa_heads)
                result = measure_point(step, dev, reps, warmup, flush_l2)
            except Exception as exc:  # noqa: BLE001 - only OOM is recorded, everything else re-raised
                if not is_oom(exc):
                    raise
                oom = True
            step = None  # free the cache (and, after an OOM, the frames the traceback held) first
            if oom:
                free_memory(dev)
                point_rows = [_row(base, op, None, "oom", n_layers if sc == "layer" else 1, sc) for op, sc in ops]
            else:
                calls = result.pop("_calls")
                floors = result.pop("_floors")
                missing = [op for op, _ in ops if op not in result]
                if missing:
                    raise RuntimeError(f"op {missing[0]!r} was never timed at batch={b} kv_len={s}; "
                                       "is the model Llama-like?")
                point_rows = [_row(base, op, result[op], "ok", calls.get(op, 1), sc,
                                   floors["step" if op == "step" else "op"]) for op, sc in ops]
                free_memory(dev)
            validate_measured(pd.DataFrame(point_rows, columns=COLUMNS))  # a bad point is never saved
            if ckpt is not None:
                ckpt.save((b, s), point_rows)
            rows += point_rows
    finally:
        del model, heads
        free_memory(dev)
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df
