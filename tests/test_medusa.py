"""Medusa heads and decoding on the tiny preset: shapes, loading, tree verification, cache compaction,
and the lossless property (Medusa output == greedy output, token for token, every row)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from medusa_roofline.cli import main
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.heads import MedusaHeads, load_medusa_heads, random_heads
from medusa_roofline.decoding.medusa import (
    crop_cache,
    greedy_generate,
    medusa_generate,
    medusa_step,
    new_cache,
    pad_prompts,
    prefill,
    prefill_inputs,
    prompt_start,
    verify_forward,
    verify_inputs,
)
from medusa_roofline.decoding.tree import TREES_DIR, build_tree, load_acceptance_table, load_tree_file
from medusa_roofline.decoding.tree_buffers import tree_buffers
from medusa_roofline.models.load import build_model

torch.set_num_threads(1)

NEW_TOKENS = 64


@pytest.fixture(scope="module")
def model():
    return build_model("tiny", torch.float32)


@pytest.fixture(scope="module")
def heads(model):
    return random_heads(model, seed=0)


@pytest.fixture(scope="module")
def table():
    return load_acceptance_table()


def prompt(batch, length=8, seed=0):
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


class OracleHeads:
    """Heads that know the greedy future: they find which position a hidden state belongs to (nearest
    stored hidden state of the reference greedy run) and place the true token i+2 ahead at a scheduled
    rank of head i, or outside the top-k ("miss"), so that steps accept 0..depth candidates and
    rows of a batch accept different lengths."""

    SCHEDULE = [0, 0, 1, 0, 2, None, 0, 3, 0, None, 1]

    def __init__(self, model, reference, num_heads=4, vocab=256, start=None):
        self.num_heads, self.vocab, self.ref = num_heads, vocab, reference
        start = torch.zeros(reference.shape[0], dtype=torch.long) if start is None else start
        mask, positions = prefill_inputs(start, reference.shape[1], torch.float32, "cpu")
        with torch.inference_mode():  # [b, L, h]; left-padded rows run as they do in generation
            self.hidden = model.model(input_ids=reference, attention_mask=mask, position_ids=positions).last_hidden_state
        self.order = torch.randperm(vocab, generator=torch.Generator().manual_seed(1))

    def rank(self, b, p, i):
        return self.SCHEDULE[(3 * p + 5 * i + 7 * b) % len(self.SCHEDULE)]

    def __call__(self, x):  # [b, 1, h] -> [K, b, 1, V]
        b = x.shape[0]
        out = torch.zeros(self.num_heads, b, 1, self.vocab)
        for row in range(b):
            dist = (self.hidden[row] - x[row, 0].float()).norm(dim=-1)
            p = int(dist.argmin())
            known = float(dist[p]) < 1e-3
            for i in range(self.num_heads):
                target = p + 2 + i
                r = self.rank(row, p, i) if known and target < self.ref.shape[1] else None
                order = self.order.tolist()
                if r is not None:
                    tok = int(self.ref[row, target])
                    order.remove(tok)
                    order.insert(r, tok)
                scores = torch.empty(self.vocab)
                scores[torch.tensor(order)] = torch.arange(self.vocab, 0, -1, dtype=torch.float32)
                out[i, row, 0] = scores
        return out


def greedy_reference(model, ids, extra=8):
    return greedy_generate(model, ids, NEW_TOKENS + extra)[0]


# --------------------------------------------------------------------------- heads

def test_heads_shapes_and_seed():
    h = MedusaHeads(64, 256, num_heads=4, num_layers=1, seed=3)
    x = torch.randn(2, 5, 64)
    y = h(x)
    assert y.shape == (4, 2, 5, 256)
    assert torch.equal(y, MedusaHeads(64, 256, num_heads=4, seed=3)(x))
    assert not torch.allclose(y, MedusaHeads(64, 256, num_heads=4, seed=4)(x))
    assert y.std() > 0.01 and not torch.allclose(y[0], y[1])
    assert MedusaHeads(64, 256, num_heads=2, num_layers=3)(x).shape == (2, 2, 5, 256)
    zero = MedusaHeads(64, 256, num_heads=1, zero_residual=True)
    assert torch.equal(zero.medusa_head[0][0](x), x), "zeroed residual block starts as the identity"


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt-bare"])
def test_heads_load_roundtrip(tmp_path, fmt):
    h = MedusaHeads(64, 256, num_heads=3, num_layers=2, seed=7)
    state = {k: v.contiguous() for k, v in h.state_dict().items()}
    if fmt == "safetensors":
        path = tmp_path / "heads.safetensors"
        save_file(state, str(path))
    elif fmt == "pt":
        path = tmp_path / "heads.pt"
        torch.save(state, path)
    else:  # the reference's medusa_lm_head.pt: ModuleList state dict, keys '0.0.linear.weight'
        path = tmp_path / "medusa_lm_head.pt"
        torch.save(h.medusa_head.state_dict(), path)
    loaded = load_medusa_heads(path, 64, 256)
    assert (loaded.num_heads, loaded.num_layers) == (3, 2)
    x = torch.randn(1, 2, 64)
    torch.testing.assert_close(loaded(x), h(x))
    assert load_medusa_heads(path, 64, 256, num_heads=2)(x).shape == (2, 1, 2, 256)


def test_heads_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="^heads: .*does not exist"):
        load_medusa_heads(tmp_path / "none.safetensors", 64, 256)
    path = tmp_path / "h.safetensors"
    save_file(dict(MedusaHeads(32, 256, num_heads=2).state_dict()), str(path))
    with pytest.raises(ConfigError, match=r"^heads: .*has shape \(32,\), expected \(64,\) for hidden=64"):
        load_medusa_heads(path, 64, 256)
    with pytest.raises(ConfigError, match="holds 2 heads, 4 requested"):
        load_medusa_heads(path, 32, 256, num_heads=4)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="^heads: cannot read"):
        load_medusa_heads(junk, 64, 256)
    odd = tmp_path / "odd.pt"
    torch.save({"lm_head.weight": torch.zeros(256, 64)}, odd)
    with pytest.raises(ConfigError, match="unexpected key"):
        load_medusa_heads(odd, 64, 256)


# --------------------------------------------------------------------------- verification pass

def test_verify_forward_matches_sequential(model, table):
    """Node i's logits from one tree pass == logits of the causal run over prefix + its path."""
    buf = tree_buffers(build_tree(table, 24))
    ids = prompt(2, 6, seed=5)
    state = prefill(model, ids, 6 + buf.n)
    tokens = torch.randint(0, 256, (2, buf.n), generator=torch.Generator().manual_seed(2))
    before = [layer.keys[:, :, :6].clone() for layer in state.cache.layers]
    with torch.inference_mode():
        out = verify_forward(model, tokens, buf, state.cache, 6)
        assert state.cache.get_seq_length() == 6 + buf.n
        nodes = [()] + buf.paths
        index = {p: i for i, p in enumerate(nodes)}
        for i in (0, 1, 5, buf.n - 1):
            chain = [index[nodes[i][:k]] for k in range(len(nodes[i]) + 1)]
            seq = torch.cat([ids, tokens[:, chain]], dim=1)
            ref = model(input_ids=seq).logits[:, -1]
            torch.testing.assert_close(out.logits[:, i], ref, atol=1e-5, rtol=1e-4)
    crop_cache(state.cache, 6)
    assert state.cache.get_seq_length() == 6
    for layer, old in zip(state.cache.layers, before):
        assert torch.equal(layer.keys[:, :, :6], old), "the prefix is untouched by the tree pass"
    with torch.inference_mode():  # precomputed inputs (what a timing loop does) give the same pass
        mask, pos = verify_inputs(model, buf, state.cache, 6, 2, "cpu")
        again = verify_forward(model, tokens, buf, state.cache, 6, mask=mask, position_ids=pos)
    torch.testing.assert_close(again.logits, out.logits)
    crop_cache(state.cache, 6)


def test_crop_cache_rejects_growth(model):
    cache = new_cache(model, 1, 8)
    with torch.inference_mode():
        model(input_ids=prompt(1, 4), past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError):
        crop_cache(cache, 5)


# --------------------------------------------------------------------------- compaction

def test_cache_compaction_equals_autoregressive(model, table):
    """After each step, each row's valid cache == the cache of prompt + committed tokens run causally."""
    ids = prompt(3, 8, seed=11)
    ref = greedy_reference(model, ids)
    oracle = OracleHeads(model, ref)
    buf = tree_buffers(build_tree(table, 32))
    state = prefill(model, ids, 8 + 4 * 5 + buf.n)
    seqs = [ids[b].tolist() for b in range(3)]
    saw_multi = saw_ragged = False
    for _ in range(4):
        committed, accepted = medusa_step(model, oracle, state, buf)
        acc = accepted.tolist()
        saw_multi |= max(acc) > 1
        saw_ragged |= len(set(state.valid.tolist())) > 1
        for b in range(3):
            seqs[b] += committed[b, : acc[b]].tolist()
            assert state.valid[b] == len(seqs[b])
            assert seqs[b] == ref[b, : len(seqs[b])].tolist(), "committed tokens are greedy tokens"
            assert state.root[b] == ref[b, len(seqs[b])], "root is the greedy next token"
            cache = new_cache(model, 1, len(seqs[b]))
            with torch.inference_mode():
                model.model(input_ids=torch.tensor([seqs[b]]), past_key_values=cache, use_cache=True)
            for got, want in zip(state.cache.layers, cache.layers):
                torch.testing.assert_close(got.keys[b : b + 1, :, : len(seqs[b])], want.keys, atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(got.values[b : b + 1, :, : len(seqs[b])], want.values, atol=1e-5, rtol=1e-4)
        assert state.cache.get_seq_length() == int(state.valid.max())
    assert saw_multi and saw_ragged


# --------------------------------------------------------------------------- lossless

@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("candidates", [16, 32, 64])
def test_lossless_random_heads(model, heads, table, batch, candidates):
    paths = build_tree(table, candidates)
    for seed in (0, 1):
        ids = prompt(batch, 8, seed=seed + 10 * batch)
        want, g = greedy_generate(model, ids, NEW_TOKENS)
        got, stats = medusa_generate(model, heads, ids, paths, NEW_TOKENS)
        assert got.shape == (batch, 8 + NEW_TOKENS)
        assert torch.equal(got, want)
        assert 1 <= stats.steps <= NEW_TOKENS - 1 and stats.mean_accepted >= 1 and stats.wall_s > 0
        assert g.steps == NEW_TOKENS - 1


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("candidates", [16, 64])
def test_lossless_oracle_heads_accept_many(model, table, batch, candidates):
    """Heads that often know the future: multi-token acceptance, ragged rows, still lossless."""
    ids = prompt(batch, 8, seed=20 + batch)
    ref = greedy_reference(model, ids)
    got, stats = medusa_generate(model, OracleHeads(model, ref), ids, build_tree(table, candidates), NEW_TOKENS)
    assert torch.equal(got, ref[:, : 8 + NEW_TOKENS])
    assert stats.mean_accepted > 1.5
    assert stats.steps < NEW_TOKENS / 1.5
    assert max(max(step) for step in stats.accept_lengths) >= 3
    if batch > 1:
        assert any(len(set(step)) > 1 for step in stats.accept_lengths), "rows should accept different lengths"


# --------------------------------------------------------------------------- ragged batches

RAGGED = [3, 8, 13]


def row_alone(model, row, new_tokens):
    return greedy_generate(model, torch.tensor([row]), new_tokens)[0][0, len(row):]


def test_pad_prompts_and_start():
    ids, mask = pad_prompts([[5, 6], [7, 8, 9, 10], [11]])
    assert ids.tolist() == [[0, 0, 5, 6], [7, 8, 9, 10], [0, 0, 0, 11]]
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]]
    assert prompt_start(ids, mask).tolist() == [2, 0, 3]
    assert prompt_start(ids, None).tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="left-padded"):
        prompt_start(ids, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]]))
    with pytest.raises(ConfigError, match="at least one token"):
        prompt_start(ids, torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]))
    with pytest.raises(ConfigError, match="shape"):
        prompt_start(ids, mask[:, 1:])
    with pytest.raises(ConfigError, match="only 0"):
        prompt_start(ids, mask * 2)
    with pytest.raises(ConfigError, match="at least one token"):
        pad_prompts([[1], []])


def test_ragged_greedy_equals_each_row_alone(model):
    rows = [prompt(1, n, seed=40 + n)[0].tolist() for n in RAGGED]
    ids, mask = pad_prompts(rows)
    got, _ = greedy_generate(model, ids, NEW_TOKENS, attention_mask=mask)
    assert got.shape == (3, max(RAGGED) + NEW_TOKENS)
    assert torch.equal(got[:, : ids.shape[1]], ids), "the padded prompt is kept as given"
    for i, row in enumerate(rows):
        assert torch.equal(got[i, ids.shape[1]:], row_alone(model, row, NEW_TOKENS)), f"row {i} (length {len(row)})"


@pytest.mark.parametrize("candidates", [16, 64])
def test_ragged_medusa_equals_each_row_alone(model, heads, table, candidates):
    rows = [prompt(1, n, seed=40 + n)[0].tolist() for n in RAGGED]
    ids, mask = pad_prompts(rows)
    got, _ = medusa_generate(model, heads, ids, build_tree(table, candidates), NEW_TOKENS, attention_mask=mask)
    for i, row in enumerate(rows):
        assert torch.equal(got[i, ids.shape[1]:], row_alone(model, row, NEW_TOKENS)), f"row {i} (length {len(row)})"


def test_ragged_medusa_oracle_heads_accept_many(model, table):
    """Ragged prompts AND ragged acceptance: each row still equals that row decoded alone."""
    rows = [prompt(1, n, seed=50 + n)[0].tolist() for n in RAGGED]
    ids, mask = pad_prompts(rows)
    ref, _ = greedy_generate(model, ids, NEW_TOKENS + 8, attention_mask=mask)
    oracle = OracleHeads(model, ref, start=prompt_start(ids, mask))
    got, stats = medusa_generate(model, oracle, ids, build_tree(table, 32), NEW_TOKENS, attention_mask=mask)
    assert stats.mean_accepted > 1.5 and any(len(set(step)) > 1 for step in stats.accept_lengths)
    for i, row in enumerate(rows):
        assert torch.equal(got[i, ids.shape[1]:], row_alone(model, row, NEW_TOKENS)), f"row {i} (length {len(row)})"


def test_upstream_tree_lossless_with_oracle_heads(model):
    """Medusa's own 63-path tree (64 nodes): deep multi-token acceptance, ragged rows, lossless."""
    tree = load_tree_file(TREES_DIR / "mc_sim_7b_63.yaml", num_heads=4, top_k=10)
    ids = prompt(2, 8, seed=31)
    ref = greedy_reference(model, ids)
    got, stats = medusa_generate(model, OracleHeads(model, ref), ids, tree.paths, NEW_TOKENS)
    assert torch.equal(got, ref[:, : 8 + NEW_TOKENS])
    assert max(max(step) for step in stats.accept_lengths) >= 3 and stats.mean_accepted > 1.5


def test_generate_errors(model, heads, table):
    ids = prompt(1)
    with pytest.raises(ConfigError, match="^max-new-tokens"):
        medusa_generate(model, heads, ids, build_tree(table, 16), 0)
    with pytest.raises(ConfigError, match="^max-new-tokens"):
        greedy_generate(model, ids, 5000)
    two = MedusaHeads(64, 256, num_heads=2)
    with pytest.raises(ConfigError, match="^candidates: tree depth"):
        medusa_generate(model, two, ids, [(0,), (0, 0), (0, 0, 0)], 8)


# --------------------------------------------------------------------------- CLI

def test_cli_generate(capsys):
    rc = main(["generate", "--model", "tiny", "--candidates", "16", "--max-new-tokens", "16",
               "--batch", "2", "--prompt-len", "4"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "identical: yes" in out and "medusa:" in out and "greedy:" in out


def test_cli_generate_tree_file_and_ragged_prompts(capsys):
    tree = str(TREES_DIR / "mc_sim_7b_63.yaml")
    rc = main(["generate", "--tree", tree, "--max-new-tokens", "12", "--prompt-len", "3", "7", "12"])
    out = capsys.readouterr().out
    assert rc == 0 and "identical: yes" in out
    assert "batch 3  prompt 3,7,12" in out and "tree mc_sim_7b_63: 64 nodes (depth 4)" in out


def test_cli_bad_tree_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("[[0], [1, 0, 2]]\n")
    assert main(["generate", "--tree", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: tree: tree file {bad}: path [1, 0, 2] has no parent [1, 0] in the tree"
    deep = tmp_path / "deep.yaml"
    deep.write_text("[[0], [0, 0], [0, 0, 0]]\n")
    assert main(["generate", "--tree", str(deep), "--num-heads", "2", "--max-new-tokens", "4"]) == 2
    assert "is 3 deep but there are only 2 Medusa heads" in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["generate", "--candidates", "1"], "candidates:"),
    (["generate", "--heads", "/nonexistent/heads.pt"], "heads:"),
    (["generate", "--model", "no-such-preset"], "model:"),
])
def test_cli_config_errors(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ragged_lossless_on_cuda():
    cuda_model = build_model("tiny", torch.float32, "cuda")
    rows = [prompt(1, n, seed=40 + n)[0].tolist() for n in RAGGED]
    ids, mask = pad_prompts(rows, device="cuda")
    tree = load_tree_file(TREES_DIR / "mc_sim_7b_63.yaml")
    got, _ = medusa_generate(cuda_model, random_heads(cuda_model), ids, tree.paths, NEW_TOKENS, attention_mask=mask)
    want, _ = greedy_generate(cuda_model, ids, NEW_TOKENS, attention_mask=mask)
    assert got.device.type == "cuda" and torch.equal(got, want)
