"""Acceptance measured from a local model: how often each Medusa head's rank-k proposal is the base
model's own greedy token, and how many tokens per step real Medusa generation then reaches.

**Offset convention** (as :func:`.medusa.propose` and the reference training loss, which pairs
``medusa_logits[i][:, : -(2 + i)]`` with ``labels[..., 2 + i :]``): the hidden state at position t is
the one whose LM-head logits give token t+1; head i reads it and proposes token **t+2+i**.

**Counting.** Each prompt is decoded greedily by the base model (``max_new_tokens`` new tokens); the
whole sequence then runs through the base model once, and the heads read the final hidden state at
every position t from the last prompt token on. For head i and rank k, ``count[i, k]`` is the number
of positions whose rank-k proposal equals the generated token t+2+i, and ``total[i]`` the number of
positions where that token exists (``max_new_tokens - 1 - i`` per prompt). ``accuracy = count/total``
with a Wilson 95 % score interval (exact at 0 and 1 counts, where a normal interval collapses).

The table is written in the long format trees are built from (``head,rank,accuracy``: see
:func:`.tree.load_acceptance_table`) plus ``count,total,ci95_low,ci95_high``.

**Real generation.** For each requested tree size, the greedy tree built from the measured table
decodes the same prompts with :func:`.medusa.medusa_generate`; tokens per step (accepted tokens,
root included, averaged over every step of every prompt) is recorded beside the value the table
predicts under independent per-head acceptance (:func:`.tree.expected_accept_length`). Their gap
measures how far the independence assumption is from this model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..core.devices import dtype_name, resolve_device, resolve_dtype
from ..core.errors import ConfigError
from ..core.io import sha256_file, write_csv, write_json
from ..core.provenance import provenance
from ..models.load import build_model
from ..models.source import checkpoint_weights, model_dims, model_name, resolve_source
from .heads import load_medusa_heads
from .medusa import greedy_generate, medusa_generate
from .prompts import load_tokenizer, random_prompts, read_prompt_file
from .tree import build_tree, expected_accept_length, max_tree_size

Z95 = 1.959963984540054
TABLE_COLUMNS = ["head", "rank", "accuracy", "count", "total", "ci95_low", "ci95_high"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
GENERATION_COLUMNS = [
    "candidates", "depth", "expected_tokens_per_step", "tokens_per_step", "tokens_per_step_ci95_low",
    "tokens_per_step_ci95_high", "prompts", "steps", "new_tokens", "identical_to_greedy", "paths",
]


def wilson_interval(count, total, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion ``count/total`` (elementwise; (0, 1) when total is 0)."""
    k = np.asarray(count, dtype=np.float64)
    n = np.asarray(total, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / n, 0.0)
        denom = 1.0 + z * z / n
        center = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = np.where((n > 0) & (k > 0), np.clip(center - half, 0.0, 1.0), 0.0)  # exactly 0 / 1 at the ends,
    high = np.where((n > 0) & (k < n), np.clip(center + half, 0.0, 1.0), 1.0)  # where rounding would miss
    return low, high


@dataclass
class AcceptanceCounts:
    """``count[i, k]``: positions where head i's rank-k proposal was the greedy token; ``total[i]``: positions."""

    count: np.ndarray  # int64 [num_heads, top_k]
    total: np.ndarray  # int64 [num_heads]

    @classmethod
    def zeros(cls, num_heads: int, top_k: int) -> AcceptanceCounts:
        return cls(np.zeros((num_heads, top_k), dtype=np.int64), np.zeros(num_heads, dtype=np.int64))

    def __add__(self, other: AcceptanceCounts) -> AcceptanceCounts:
        return AcceptanceCounts(self.count + other.count, self.total + other.total)

    def table(self) -> np.ndarray:
        """Accuracy ``[num_heads, top_k]``, the array :func:`.tree.build_tree` takes."""
        if (self.total <= 0).any():
            raise ConfigError("acceptance: a head was never scored; generate more new tokens than there are heads")
        return self.count / self.total[:, None]

    def frame(self) -> pd.DataFrame:
        """The long-format table: one row per (head, rank) with count, total and the Wilson 95 % interval."""
        acc = self.table()
        totals = np.broadcast_to(self.total[:, None], self.count.shape)
        low, high = wilson_interval(self.count, totals)
        heads, ranks = np.indices(self.count.shape)
        return pd.DataFrame({
            "head": heads.ravel(), "rank": ranks.ravel(), "accuracy": acc.ravel(), "count": self.count.ravel(),
            "total": totals.ravel(), "ci95_low": low.ravel(), "ci95_high": high.ravel(),
        }, columns=TABLE_COLUMNS)


def head_matches(proposals: torch.Tensor, tokens: torch.Tensor, prompt_len: int) -> AcceptanceCounts:
    """Counts from one batch: ``proposals [K, b, T, top_k]`` (heads' top-k at every position of the
    sequences ``tokens [b, T]``, prompt of ``prompt_len`` tokens then greedy tokens).

    Head i at position t (``prompt_len - 1 <= t``) is scored against ``tokens[:, t + 2 + i]`` wherever
    that index exists."""
    num_heads, b, length, top_k = proposals.shape
    if tuple(tokens.shape) != (b, length):
        raise ValueError(f"tokens {tuple(tokens.shape)} do not match proposals {tuple(proposals.shape)}")
    counts = AcceptanceCounts.zeros(num_heads, top_k)
    first = prompt_len - 1
    for i in range(num_heads):
        last = length - 2 - i  # exclusive end: position t needs token t + 2 + i < length
        if last <= first:
            continue
        target = tokens[:, first + 2 + i: length]  # [b, last - first]
        hit = proposals[i, :, first:last, :] == target[..., None]  # [b, positions, top_k]
        counts.count[i] += hit.sum(dim=(0, 1)).cpu().numpy()
        counts.total[i] += b * (last - first)
    return counts


def length_batches(prompts: list[list[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped by length (equal-length rows batch without padding), in chunks of ``batch_size``."""
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    return [idx[j: j + batch_size] for _, idx in sorted(by_len.items()) for j in range(0, len(idx), batch_size)]


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def greedy_runs(model, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 32):
    """Greedy decoding of every prompt: a list of ``(prompt indices, tokens [b, prompt + new])``."""
    device = _device(model)
    return [(idx, greedy_generate(model, torch.tensor([prompts[i] for i in idx], device=device), max_new_tokens)[0])
            for idx in length_batches(prompts, batch_size)]


@torch.inference_mode()
def measure_acceptance(model, heads, prompts: list[list[int]], max_new_tokens: int, top_k: int,
                       runs=None, batch_size: int = 32) -> AcceptanceCounts:
    """Per-head, per-rank acceptance counts of ``heads`` on the base model's greedy continuations."""
    num_heads = heads.num_heads
    if max_new_tokens < num_heads + 1:
        raise ConfigError(f"acceptance: max_new_tokens {max_new_tokens} leaves head {num_heads - 1} nothing to "
                          f"score; use at least {num_heads + 1}")
    if not 1 <= top_k <= model.config.vocab_size:
        raise ConfigError(f"acceptance: top_k {top_k} is outside 1..{model.config.vocab_size} (the vocabulary)")
    runs = greedy_runs(model, prompts, max_new_tokens, batch_size) if runs is None else runs
    total = AcceptanceCounts.zeros(num_heads, top_k)
    for idx, tokens in runs:
        hidden = model.model(input_ids=tokens).last_hidden_state
        param = next(heads.parameters())
        proposals = heads(hidden.to(param.dtype)).topk(top_k, dim=-1).indices  # [K, b, T, top_k]
        total = total + head_matches(proposals, tokens, len(prompts[idx[0]]))
    return total


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and a normal 95 % interval of the mean (the mean twice when there is one value)."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, mean, mean
    half = Z95 * float(arr.std(ddof=1)) / math.sqrt(len(arr))
    return mean, mean - half, mean + half


@torch.inference_mode()
def generation_rows(model, heads, prompts: list[list[int]], table: np.ndarray, candidates, max_new_tokens: int,
                    runs) -> pd.DataFrame:
    """Real Medusa generation per tree size: tokens per step (mean over prompts, 95 % interval across
    prompts) beside the independence prediction, and whether every row matched greedy decoding."""
    limit = max_tree_size(table)
    rows = []
    for c in candidates:
        if isinstance(c, bool) or not isinstance(c, int) or not 2 <= c <= limit:
            raise ConfigError(f"acceptance: candidates {c!r} is outside 2..{limit}, the trees the measured table "
                              f"of {table.shape[0]} heads x top-{table.shape[1]} can build")
        paths = build_tree(table, c)
        per_prompt, steps, identical = [], 0, True
        for idx, greedy in runs:
            out, stats = medusa_generate(model, heads, greedy[:, : len(prompts[idx[0]])], paths, max_new_tokens)
            identical &= torch.equal(out, greedy)
            for row in range(len(idx)):
                accepted = [step[row] for step in stats.accept_lengths if step[row] > 0]
                per_prompt.append(sum(accepted) / len(accepted))
                steps += len(accepted)
        mean, low, high = mean_ci(per_prompt)
        rows.append({
            "candidates": c, "depth": max(len(p) for p in paths),
            "expected_tokens_per_step": expected_accept_length(table, paths), "tokens_per_step": mean,
            "tokens_per_step_ci95_low": low, "tokens_per_step_ci95_high": high, "prompts": len(per_prompt),
            "steps": steps, "new_tokens": max_new_tokens, "identical_to_greedy": bool(identical),
            "paths": json.dumps([list(p) for p in paths]),
        })
    return pd.DataFrame(rows, columns=GENERATION_COLUMNS)


# --------------------------------------------------------------------------- from files


@dataclass
class AcceptanceResult:
    table: pd.DataFrame  # TABLE_COLUMNS
    generation: pd.DataFrame  # GENERATION_COLUMNS
    summary: dict


def _prompts_for(model_source: str, prompts_file, tokenizer_dir, vocab: int, random_spec: tuple[int, int], seed: int):
    """(prompts, description): from the prompt file (with the tokenizer), or seeded random ids."""
    if prompts_file is None:
        count, length = random_spec
        return random_prompts(vocab, count, length, seed), {"kind": "random", "count": count, "length": length,
                                                            "seed": seed}
    directory = resolve_source(model_source)
    if tokenizer_dir is None and any((directory / f).is_file() for f in TOKENIZER_FILES):
        tokenizer_dir = directory  # a checkpoint saved with its tokenizer
    tokenizer = None if tokenizer_dir is None else load_tokenizer(tokenizer_dir)
    prompts = read_prompt_file(prompts_file, tokenizer, vocab)
    return prompts, {"kind": "file", "file": str(prompts_file), "sha256": sha256_file(prompts_file),
                     "count": len(prompts), "tokenizer": None if tokenizer_dir is None else str(tokenizer_dir)}


def acceptance_from_files(model_source: str, heads_file, prompts_file=None, tokenizer_dir=None, *,
                          random_spec: tuple[int, int] = (32, 16), seed: int = 0, max_new_tokens: int = 64,
                          top_k: int = 10, candidates=(16,), dtype: str = "float32", device: str = "cpu",
                          batch_size: int = 32) -> AcceptanceResult:
    """Measure the acceptance table and real tokens per step of a local base model + heads file.

    Every input (model config, heads file, prompt file, tokenizer) is read and checked before any
    decoding starts; nothing is written here (the caller writes the result)."""
    dims = model_dims(model_source, "acceptance.model")
    torch_dtype = resolve_dtype(dtype, resolve_device(device))
    heads = load_medusa_heads(heads_file, dims.hidden, dims.vocab, dtype=torch_dtype, device=device)
    prompts, prompt_info = _prompts_for(model_source, prompts_file, tokenizer_dir, dims.vocab, random_spec, seed)
    longest = max(len(p) for p in prompts) + max_new_tokens + 2 * heads.num_heads + 1
    if dims.max_positions and longest > dims.max_positions:
        raise ConfigError(f"acceptance: the longest prompt + {max_new_tokens} new tokens needs {longest} positions; "
                          f"the model has {dims.max_positions}")
    t0 = time.perf_counter()
    model = build_model(model_source, torch_dtype, device=device, seed=seed)
    runs = greedy_runs(model, prompts, max_new_tokens, batch_size)
    counts = measure_acceptance(model, heads, prompts, max_new_tokens, top_k, runs)
    table = counts.table()
    generation = generation_rows(model, heads, prompts, table, list(candidates), max_new_tokens, runs)
    summary = {
        "model": model_name(model_source), "model_source": str(resolve_source(model_source)),
        "weights": "checkpoint" if checkpoint_weights(model_source) else "random (seeded, from config)",
        "heads_file": str(heads_file), "heads_sha256": sha256_file(heads_file), "num_heads": heads.num_heads,
        "head_layers": heads.num_layers, "prompts": prompt_info, "max_new_tokens": max_new_tokens, "top_k": top_k,
        "dtype": dtype_name(torch_dtype), "device": str(device), "scored_positions": counts.total.tolist(),
        "top1_accuracy": table[:, 0].round(6).tolist(), "wall_s": round(time.perf_counter() - t0, 3),
        **provenance(device),
    }
    return AcceptanceResult(counts.frame(), generation, summary)


def write_result(result: AcceptanceResult, table_path, generation_path, summary_path=None) -> None:
    """Write the table, the generation rows and (optionally) the summary, each atomically."""
    write_csv(result.table, table_path)
    write_csv(result.generation, generation_path)
    if summary_path is not None:
        write_json(result.summary, summary_path)
