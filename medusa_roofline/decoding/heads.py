"""Medusa heads: K small residual MLP + LM-head stacks on the base model's last hidden state.

Head i proposes the token i+2 positions ahead of the hidden state it reads (the base model's own
LM head gives position +1). Layout and parameter names follow the reference implementation
(``medusa_head.{i}.{j}.linear.*`` for residual block j, ``medusa_head.{i}.{num_layers}.weight`` for
the vocabulary projection), so its published ``medusa_lm_head`` files load unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from ..core.errors import ConfigError
from ..core.io import atomic_write_bytes
from ..models.init import seeded_fill_


class ResBlock(nn.Module):
    """x + SiLU(Wx + b): the paper's head block; zero W makes it the identity."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))


class MedusaHeads(nn.Module):
    """``num_heads`` heads, each ``num_layers`` ResBlocks then Linear(hidden, vocab, bias=False).

    Built on the meta device and allocated directly on ``device`` in ``dtype`` (default float32 on
    the CPU). Weights are seeded-random by default (std ``init_std``, biases zero), written there by
    :func:`~medusa_roofline.models.init.seeded_fill_`, so that timing runs do real, non-degenerate
    arithmetic without any host-side RNG; ``zero_residual=True`` instead zeroes the residual linears
    as the reference does before training; ``fill=False`` leaves the storage unset for a caller that
    loads weights into it. ``forward`` returns logits ``[num_heads, b, t, vocab]``.
    """

    def __init__(self, hidden: int, vocab: int, num_heads: int = 4, num_layers: int = 1, seed: int = 0,
                 init_std: float = 0.02, zero_residual: bool = False, dtype=None, device=None, fill: bool = True):
        super().__init__()
        if num_heads < 1:
            raise ConfigError(f"heads: num_heads must be >= 1, got {num_heads}")
        if num_layers < 0:
            raise ConfigError(f"heads: num_layers must be >= 0, got {num_layers}")
        self.hidden, self.vocab = hidden, vocab
        self.num_heads, self.num_layers = num_heads, num_layers
        with torch.device("meta"):
            self.medusa_head = nn.ModuleList(
                nn.Sequential(*[ResBlock(hidden) for _ in range(num_layers)], nn.Linear(hidden, vocab, bias=False))
                for _ in range(num_heads)
            )
        self.to(dtype=dtype or torch.float32).to_empty(device=device or "cpu")
        if fill:
            seeded_fill_(self, seed, init_std, zero=lambda name: zero_residual and ".linear." in name)
        self.eval()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(hidden_states) for head in self.medusa_head], dim=0)


def random_heads(model, num_heads: int = 4, num_layers: int = 1, seed: int = 0) -> MedusaHeads:
    """Seeded random heads matching ``model``'s hidden size, vocabulary, dtype and device."""
    cfg = model.config
    p = next(model.parameters())
    return MedusaHeads(cfg.hidden_size, cfg.vocab_size, num_heads, num_layers, seed=seed,
                       dtype=p.dtype, device=p.device)


_KEY = re.compile(r"^(?:.*\.)?(?:medusa_head\.)?(\d+)\.(\d+)\.(linear\.weight|linear\.bias|weight)$")


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decode failure is a bad user file
        raise ConfigError(f"heads: cannot read Medusa heads file {path}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"heads: {path} does not hold a state dict of tensors")
    return state


def load_medusa_heads(path, hidden: int, vocab: int, num_heads: int | None = None, num_layers: int | None = None,
                      dtype=None, device=None) -> MedusaHeads:
    """Load heads from a ``.safetensors`` file or a ``torch.save``'d state dict.

    Keys may be bare (``0.0.linear.weight``, the reference's ``medusa_lm_head.pt``) or carry a
    ``medusa_head.`` (or any module) prefix. Head and layer counts are read from the keys unless given;
    every tensor's shape must fit ``hidden`` and ``vocab``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"heads: Medusa heads file {path} does not exist")
    state = _read_state(path)
    parsed: dict[tuple[int, int, str], torch.Tensor] = {}
    for key, tensor in state.items():
        m = _KEY.match(key)
        if not m:
            raise ConfigError(f"heads: {path} has unexpected key {key!r}; expected '<head>.<block>.linear.weight' style keys")
        parsed[(int(m.group(1)), int(m.group(2)), m.group(3))] = tensor
    if not parsed:
        raise ConfigError(f"heads: {path} holds no tensors")
    found_heads = max(h for h, _, _ in parsed) + 1
    found_layers = max(j for _, j, _ in parsed)  # the last index of each head is the vocab projection
    num_heads = found_heads if num_heads is None else num_heads
    num_layers = found_layers if num_layers is None else num_layers
    if num_heads > found_heads:
        raise ConfigError(f"heads: {path} holds {found_heads} heads, {num_heads} requested")

    heads = MedusaHeads(hidden, vocab, num_heads, num_layers, device="meta", fill=False)
    own = heads.state_dict()
    loaded = {}
    for (h, j, kind), tensor in parsed.items():
        if h >= num_heads:
            continue
        key = f"medusa_head.{h}.{j}.{kind}"
        if key not in own:
            raise ConfigError(f"heads: {path} entry for head {h} block {j} ({kind}) does not fit "
                              f"{num_layers} residual layer(s) per head")
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ConfigError(f"heads: {path} tensor {key} has shape {tuple(tensor.shape)}, expected "
                              f"{tuple(own[key].shape)} for hidden={hidden} vocab={vocab}")
        loaded[key] = tensor
    missing = sorted(set(own) - set(loaded))
    if missing:
        raise ConfigError(f"heads: {path} lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    heads.load_state_dict(loaded, assign=True)
    return heads.to(device=device, dtype=dtype or torch.float32).eval()


def save_medusa_heads(heads: MedusaHeads, path) -> Path:
    """Write ``heads`` as safetensors in the reference layout (the ``medusa_head`` list's own keys,
    ``{head}.{block}.linear.weight`` ... ``{head}.{num_layers}.weight``), atomically."""
    state = {key.removeprefix("medusa_head."): t.detach().to("cpu").contiguous()
             for key, t in heads.state_dict().items()}
    path = Path(path)
    atomic_write_bytes(path, save(state, metadata={"format": "pt", "medusa_num_heads": str(heads.num_heads),
                                                   "medusa_num_layers": str(heads.num_layers)}))
    return path
