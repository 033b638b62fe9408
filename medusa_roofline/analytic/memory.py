"""How many bytes a measured point needs resident: weights, KV cache and the step's largest temporaries.

Used to skip points that would not fit (recorded ``status=oom``) and recorded as ``est_bytes``. These are
estimates of peak residency, not the traffic the roofline counts (:mod:`.costmodel`).
"""

from __future__ import annotations


def weight_params(dims, layers: int, medusa_heads: int = 0, medusa_layers: int = 1) -> int:
    """Parameters of the instantiated model (+ Medusa heads): embeddings, layers, norm, LM head."""
    h, d = dims.hidden, dims.head_dim
    attn = h * dims.heads * d + 2 * h * dims.kv_heads * d + dims.heads * d * h
    mlp = 3 * h * dims.intermediate
    per_layer = attn + mlp + 2 * h
    base = 2 * dims.vocab * h + layers * per_layer + h  # embed + lm_head (untied) + final norm
    heads = medusa_heads * (medusa_layers * (h * h + h) + h * dims.vocab)
    return base + heads


def estimate_working_set_bytes(dims, layers: int, batch: int, kv_len: int, q_len: int, elem_bytes: int,
                               medusa_heads: int = 0, flush_bytes: int = 0) -> int:
    """Peak bytes a point needs, estimated (used for ``max_memory_bytes`` and the ``est_bytes`` column).

    weights      : :func:`weight_params` x element size (model + Medusa heads)
    KV cache     : 2 (K,V) x layers x batch x kv_heads x (kv_len + q_len) x head_dim x elem (the
                   preallocated cache's capacity; it is written in place, never copied)
    attention    : per layer (freed after it), scores in dtype + float32 softmax + probs in dtype,
                   ``[b, H, q_len, keys]`` each, + the additive mask ``[b, 1, q_len, keys]``
    MLP / hidden : 3 x ``[b, q_len, intermediate]`` + 4 x ``[b, q_len, hidden]``
    logits       : ``[b, q_len, vocab]`` x (1 + 2 x heads) (heads' outputs, then ``torch.stack``)
    flush buffer : the L2-flush buffer of the timer
    """
    keys = kv_len + q_len
    weights = weight_params(dims, layers, medusa_heads) * elem_bytes
    kv_layer = 2 * batch * dims.kv_heads * keys * dims.head_dim * elem_bytes
    kv = layers * kv_layer
    scores = batch * dims.heads * q_len * keys
    attention = scores * (2 * elem_bytes + 4) + batch * q_len * keys * elem_bytes
    mlp = batch * q_len * (3 * dims.intermediate + 4 * dims.hidden) * elem_bytes
    logits = batch * q_len * dims.vocab * elem_bytes * (1 + 2 * medusa_heads)
    return int(weights + kv + attention + mlp + logits + flush_bytes)


def attention_working_set_bytes(dims, batch: int, kv_len: int, q_len: int, elem_bytes: int) -> int:
    """Q, K, V, mask, scores (dtype), float32 softmax, probs (dtype) and output of one point."""
    keys = kv_len + q_len
    qo = 2 * batch * dims.heads * q_len * dims.head_dim
    kv = 2 * batch * dims.kv_heads * keys * dims.head_dim
    scores = batch * dims.heads * q_len * keys
    return int((qo + kv + batch * q_len * keys + 2 * scores) * elem_bytes + 4 * scores)


def fused_attention_working_set_bytes(dims, batch: int, kv_len: int, q_len: int, elem_bytes: int) -> int:
    """Q, K, V, mask and output of one point on a fused backend (no score matrix)."""
    keys = kv_len + q_len
    qo = 2 * batch * dims.heads * q_len * dims.head_dim
    kv = 2 * batch * dims.kv_heads * keys * dims.head_dim
    return int((qo + kv + batch * q_len * keys) * elem_bytes)


PROCESS_BASELINE_MB = {"cpu": 512, "cuda": 2048}
"""Host memory of a measuring process before any model: Python, torch, transformers, pandas (about
400 MB measured on the CPU), plus the CUDA runtime and its libraries on a GPU host."""


def rule_mem_mb(dims, layers: int, batches, kv_lens, q_lens, elem_bytes: int, medusa_heads: int = 0,
                device: str = "cpu", checkpoint: bool = False, margin: float = 1.25) -> int:
    """Host memory (MB) to declare for a measuring rule (Snakemake ``resources: mem_mb``).

    CPU: the process baseline plus the largest point of the grid (:func:`estimate_working_set_bytes`:
    weights + Medusa heads + KV cache + the step's temporaries), times ``margin``. CUDA: weights,
    cache and temporaries live on the GPU (random weights are made there, :mod:`..models.init`), so
    the host needs the baseline, plus the weights once when a ``checkpoint`` is read through host
    memory before it moves to the GPU. Rounded up to a multiple of 256 MB.
    """
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if kind == "cpu":
        need = max(estimate_working_set_bytes(dims, layers, b, s, q, elem_bytes, medusa_heads)
                   for b in batches for s in kv_lens for q in q_lens)
    else:
        need = weight_params(dims, layers, medusa_heads) * elem_bytes if checkpoint else 0
    return declared_mb(kind, need, margin)


def attention_mem_mb(dims, batches, kv_lens, q_lens, elem_bytes: int, device: str = "cpu",
                     margin: float = 1.25) -> int:
    """Host memory (MB) to declare for the micro-benchmark: no weights, only one point's attention
    tensors at a time (:func:`attention_working_set_bytes`; on CUDA they live on the GPU)."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    need = 0 if kind == "cuda" else max(attention_working_set_bytes(dims, b, s, q, elem_bytes)
                                        for b in batches for s in kv_lens for q in q_lens)
    return declared_mb(kind, need, margin)


def declared_mb(kind: str, need_bytes: float, margin: float) -> int:
    """The process baseline plus ``need_bytes`` with a margin, rounded up to a multiple of 256 MB."""
    mb = PROCESS_BASELINE_MB[kind] + margin * need_bytes / 2**20
    return int(-(-mb // 256) * 256)
