"""qk / softmax / pv (and fused attention) micro-benchmark at a model's true attention shapes, without weights.

This is the measured counterpart of the Medusa paper's qk/pv roofline chart: for each mode
(``ar`` = 1 query token, ``medusa-N`` = the N-token tree) and (batch, kv_len) point it runs one
layer's attention core on random tensors shaped like the model's:

* Q ``[b, H, n, d]``, laid out as the model leaves it (projected ``[b, n, H, d]`` then transposed),
* K, V ``[b, H_kv, kv_len + n, d]`` contiguous, as the HF cache returns them after appending the
  step's own n tokens (so ``keys = kv_len + n``, same as the sweep's eager path),
* the additive mask ``[b, 1, n, kv_len + n]``: zeros for ar, the Medusa tree mask for medusa-N
  (tree from ``tree.tree_paths_for``: the greedy tree on the acceptance table).

Every listed attention backend (:mod:`.attention`: ``eager``, ``sdpa``, ``flex``) runs on the same
tensors. ``eager`` is timed as three ops, ``qk``, ``softmax`` and ``pv`` (the sweep's eager steps);
the fused backends as one op, ``attn``. **Each op is timed on its own** with
:func:`~medusa_roofline.measure.timing.time_callable` on fixed inputs (softmax on stored scores, pv on stored
probabilities): warm-up calls, then every repetition preceded by the L2 flush (CUDA: CUDA events;
CPU: ``perf_counter``), so no op is flattered by what the previous op left in cache. Every fused
backend's output is checked against eager's (dtype tolerance; eager is run untimed for it when not
listed): a backend that computes something else stops the run instead of being plotted.

Rows use the sweep's :data:`~medusa_roofline.measure.table.COLUMNS` with ``bench = "microbench"``,
``scope = "layer"``, ``calls = 1``, ``layers = 0`` (no decoder layer is instantiated),
``attention_backend`` and ``kernel`` (``eager``; the SDPA kernel that ran, e.g.
``EFFICIENT_ATTENTION``; or how flex ran), so metrics treat both sources alike. Every row also
carries ``host_s_median`` (CUDA), ``launch_floor_s`` (a one-element kernel timed the same way,
measured once per run) and, for compiled flex, ``compiles`` (graphs built while preparing the point). ``kv_len + n`` is
not checked against the model's ``max_position_embeddings`` here (no positions are involved); the
sweep does check it. An out-of-memory point (or backend at a point) is recorded with status ``oom``.
"""

from __future__ import annotations

import contextlib
import logging
import math

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..analytic.memory import attention_working_set_bytes, fused_attention_working_set_bytes
from ..core.codedeps import code_digest
from ..core.devices import dtype_name, free_memory, is_oom, resolve_device, resolve_dtype
from ..core.errors import ConfigError
from ..core.provenance import provenance
from ..decoding.tree import acceptance_array, tree_paths_for
from ..decoding.tree_buffers import tree_attention_mask, tree_buffers
from ..models.source import model_dims, model_name
from . import attention, checkpoint
from .backends import backend_ops, parse_backends
from .grid import TREE_PREFIX, parse_mode
from .table import COLUMNS, validate_measured
from .timing import flush_mode, time_callable, tiny_kernel_floor

log = logging.getLogger(__name__)


def attention_inputs(dims, batch: int, kv_len: int, q_len: int, dtype, device, buffers=None, generator=None):
    """Random (query, key, value, mask) at the model's shapes for one point."""
    h, hkv, d = dims.heads, dims.kv_heads, dims.head_dim
    keys = kv_len + q_len
    query = torch.randn(batch, q_len, h, d, generator=generator, device=device, dtype=dtype).transpose(1, 2)
    key = torch.randn(batch, hkv, keys, d, generator=generator, device=device, dtype=dtype)
    value = torch.randn(batch, hkv, keys, d, generator=generator, device=device, dtype=dtype)
    if buffers is None:
        mask = torch.zeros(batch, 1, q_len, keys, dtype=dtype, device=device)
    else:
        mask = tree_attention_mask(buffers, kv_len, batch, dtype, device)
    return query, key, value, mask


def measure_prepared(prepared, device, reps: int, warmup: int, flush_l2: bool = True, cuda_graph: bool = False):
    """{op: Stats}: every op of a prepared backend timed on its own (``time_callable``, L2 flush per rep)."""
    with prepared.context():
        return {op: time_callable(fn, device, warmup, reps, flush_l2, cuda_graph=cuda_graph,
                                  op=f"{prepared.backend} {op}")
                for op, fn in prepared.calls.items()}


def run_microbench(model_source: str, modes, batches, kv_lens, dtype="auto", device="cpu", reps: int = 10,
                   warmup: int = 3, progress: bool = True, acceptance_table=None, seed: int = 0,
                   flush_l2: bool = True, checkpoint_dir=None, attention_backends=("eager",),
                   flex_compile: bool | None = None, cuda_graph: bool = False, trees=()):
    """Time every backend's ops at ``model_source``'s attention shapes; one row per
    (mode, backend, op, batch, kv_len), in the order (mode, batch, kv_len, backend, op).

    ``attention_backends``: any of ``eager`` (ops qk, softmax, pv), ``sdpa``, ``flex`` (op attn).
    ``flex_compile``: compile flex_attention (default: yes; on the CPU a failed compile falls back to
    the uncompiled reference path, noted in ``kernel``). ``cuda_graph``: time CUDA-graph replays.
    An out-of-memory point (or backend at a point) is recorded with status ``oom`` (NaN times) and
    the run goes on. ``checkpoint_dir``: save every point there and reuse the points a killed run
    saved (:mod:`.checkpoint`); the caller removes it once the table is written. ``trees``: tree files
    (or :class:`~medusa_roofline.decoding.tree.Tree`) that ``tree-NAME`` modes run (NAME: the file's stem).
    """
    if isinstance(modes, str):
        modes = [modes]
    modes = list(modes or [])
    if not modes:
        raise ConfigError("modes: the list is empty; give 'ar', 'medusa-N' and/or 'tree-NAME' entries")
    explicit = {}  # name -> Tree; bounds: the table's heads, ranks free (no heads run here)
    heads = int(acceptance_array(acceptance_table).shape[0]) if trees else None
    for chosen in (tree_paths_for(spec, num_heads=heads) for spec in trees or ()):
        explicit[chosen.name] = chosen
    parsed = []
    for mode in modes:
        m = parse_mode(mode, key="modes", trees={name: t.candidates for name, t in explicit.items()})
        if m not in parsed:
            parsed.append(m)
    backends = parse_backends(attention_backends)
    dims = model_dims(model_source)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if cuda_graph and dev.type != "cuda":
        raise ConfigError(f"cuda_graph: needs a CUDA device, got {dev}")
    elem = torch.tensor([], dtype=torch_dtype).element_size()

    masks, tree_names = {}, {}
    if any(m.phase == "medusa" for m in parsed):
        table = acceptance_array(acceptance_table)
        for m in parsed:
            if m.phase == "medusa":
                chosen = explicit[m.name[len(TREE_PREFIX):]] if m.name.startswith(TREE_PREFIX) else \
                    tree_paths_for(m.q_len, table)
                masks[m.name], tree_names[m.name] = tree_buffers(chosen.paths, dev), chosen.name

    prov = provenance(dev)
    common = {
        "bench": "microbench", "model": model_name(model_source), "device": str(dev),
        "device_name": prov["device_name"], "scope": "layer", "calls": 1, "layers": 0,
        "heads": dims.heads, "kv_heads": dims.kv_heads, "head_dim": dims.head_dim,
        "dtype": dtype_name(torch_dtype), "reps": reps, "warmup": warmup, "threads": torch.get_num_threads(),
        "torch": prov["torch"], "transformers": prov["transformers"], "cuda": prov["cuda"],
        "git_commit": prov["git_commit"], "git_dirty": prov["git_dirty"], "hostname": prov["hostname"], "seed": seed,
    }
    scaling = dims.head_dim ** -0.5
    points = [(m, b, s) for m in parsed for b in batches for s in kv_lens]
    key = {
        "what": "microbench", "model": checkpoint.model_fingerprint(model_source),
        "dtype": common["dtype"], "device": common["device"], "device_name": common["device_name"],
        "reps": reps, "warmup": warmup, "seed": seed, "flush_l2": flush_mode(flush_l2), "threads": common["threads"],
        "acceptance": checkpoint.acceptance_fingerprint(acceptance_table) if tree_names else None,
        "trees": {name: [list(p) for p in t.paths] for name, t in sorted(explicit.items())},
        "torch": prov["torch"], "transformers": prov["transformers"], "cuda": prov["cuda"],
        "code": code_digest(__name__),
        "attention_backends": backends, "flex_compile": flex_compile, "cuda_graph": cuda_graph,
    }
    ckpt = checkpoint.open_checkpoint(checkpoint_dir, key)
    saved = {}
    if ckpt is not None:
        for m, b, s in points:
            point_rows = ckpt.load((m.name, b, s))
            if point_rows is not None:
                saved[(m.name, b, s)] = point_rows
        ckpt.log_resumed(len(points), f"microbench {model_name(model_source)}")
    flex = attention.FlexState(dev, flex_compile) if "flex" in backends else None
    settings = attention.compile_settings() if flex is not None and flex.compile else contextlib.nullcontext()
    rows = []
    bar = tqdm(points, desc=f"microbench {model_name(model_source)}", disable=not progress, unit="pt")
    floor = None
    with settings:
        for m, b, s in bar:
            if (m.name, b, s) in saved:
                rows += saved[(m.name, b, s)]
                continue
            if floor is None:  # the launch floor of this run's timing path, measured once before its first point
                floor = tiny_kernel_floor(dev, max(reps, 10), warmup, flush_l2, cuda_graph).median
            base = dict(common, mode=m.name, phase=m.phase, candidates=m.candidates,
                        tree=tree_names.get(m.name, ""), batch=b, kv_len=s,
                        q_len=m.q_len, keys=s + m.q_len, launch_floor_s=floor)
            point_rows = _measure_point(dims, m, b, s, torch_dtype, dev, masks.get(m.name), seed, backends, scaling,
                                        flex, reps, warmup, flush_l2, cuda_graph, elem, base)
            validate_measured(pd.DataFrame(point_rows, columns=COLUMNS))  # a bad point is never saved
            if ckpt is not None:
                ckpt.save((m.name, b, s), point_rows)
            rows += point_rows
    if flex is not None and flex.compiled:
        log.info("flex_attention: %d graph(s) compiled for %d point(s) (static shapes: one per new shape)",
                 flex.compiles, len(points) - len(saved))
    if dev.type == "cuda":
        free_memory(dev)
    return pd.DataFrame(rows, columns=COLUMNS)


def _rows(base: dict, backend: str, kernel: str, est: int, stats: dict | None,
          compiles: int | None = None) -> list[dict]:
    out = []
    for op in backend_ops(backend):
        row = dict(base, attention_backend=backend, kernel=kernel, est_bytes=est, op=op,
                   compiles=math.nan if compiles is None else compiles)
        if stats is None:
            row.update(status="oom", time_s_median=math.nan, time_s_p10=math.nan, time_s_p90=math.nan,
                       host_s_median=math.nan)
        else:
            st = stats[op]
            row.update(status="ok", time_s_median=st.median, time_s_p10=st.p10, time_s_p90=st.p90,
                       host_s_median=math.nan if st.host_median is None else st.host_median)
        out.append(row)
    return out


def _measure_point(dims, m, b, s, torch_dtype, dev, buffers, seed, backends, scaling, flex, reps, warmup, flush_l2,
                   cuda_graph, elem, base) -> list[dict]:
    """Rows of one (mode, batch, kv_len) point for every backend: eager first, fused ones checked against it."""
    estimates = {"eager": attention_working_set_bytes(dims, b, s, m.q_len, elem)}
    fused_est = fused_attention_working_set_bytes(dims, b, s, m.q_len, elem)
    results: dict[str, tuple[str, dict | None, int | None]] = {}
    inputs_oom = False
    where = f"mode={m.name} batch={b} kv_len={s}"
    try:
        with torch.inference_mode():
            gen = torch.Generator(device=dev).manual_seed(seed)
            q, k, v, mask = attention_inputs(dims, b, s, m.q_len, torch_dtype, dev, buffers, gen)
    except Exception as exc:  # noqa: BLE001 - only OOM is recorded, everything else re-raised
        if not is_oom(exc):
            raise
        inputs_oom = True
    if inputs_oom:  # outside the except block, so the traceback's frames (and their tensors) are gone
        free_memory(dev)
        return [r for be in backends for r in _rows(base, be, "", estimates.get(be, fused_est), None, None)]
    reference = None
    if "eager" not in backends:  # the fused backends are still checked against eager's output (untimed)
        try:
            with torch.inference_mode():
                reference = attention.prepare_eager(q, k, v, mask, scaling).output
        except Exception as exc:  # noqa: BLE001 - no reference at this point if eager does not fit
            if not is_oom(exc):
                raise
        if reference is None:
            free_memory(dev)
    order = sorted(backends, key=lambda be: be != "eager")  # eager first: its output checks the others
    for backend in order:
        oom = False
        prepared = None
        try:
            with torch.inference_mode():
                prepared = attention.prepare(backend, q, k, v, scaling, mask=mask,
                                             ancestor=None if buffers is None else buffers.ancestor_mask,
                                             kv_len=s, flex=flex)
                if backend == "eager":
                    reference = prepared.output
                elif reference is not None:
                    attention.check_output(prepared, reference, where)
                stats = measure_prepared(prepared, dev, reps, warmup, flush_l2, cuda_graph)
                results[backend] = (prepared.kernel, stats, prepared.compiles)
        except Exception as exc:  # noqa: BLE001 - only OOM is recorded, everything else re-raised
            if not is_oom(exc):
                raise
            oom = True
        kernel = prepared.kernel if prepared is not None else ""
        compiles = prepared.compiles if prepared is not None else None
        prepared = None  # free the stored scores / probabilities before the next backend
        if oom:
            free_memory(dev)
            results[backend] = (kernel, None, compiles)
    out = []
    for be in backends:
        kernel, stats, compiles = results[be]
        out += _rows(base, be, kernel, estimates.get(be, fused_est), stats, compiles)
    return out
