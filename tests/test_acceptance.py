"""Acceptance measured from a model: counting by hand, the Wilson interval, the offset convention
(checked against real Medusa generation), prompt files, heads files and the clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from medusa_roofline.cli import main
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.core.io import write_csv
from medusa_roofline.decoding import acceptance
from medusa_roofline.decoding.acceptance import AcceptanceCounts, head_matches, wilson_interval
from medusa_roofline.decoding.heads import MedusaHeads, load_medusa_heads, save_medusa_heads
from medusa_roofline.decoding.medusa import greedy_generate
from medusa_roofline.decoding.prompts import load_tokenizer, random_prompts, read_prompt_file
from medusa_roofline.decoding.tree import load_acceptance_table
from medusa_roofline.models.load import build_model
from medusa_roofline.models.synthetic import char_tokenizer

torch.set_num_threads(1)

VOCAB = 256  # the tiny preset


@pytest.fixture(scope="module")
def model():
    return build_model("tiny", torch.float32)


# --------------------------------------------------------------------------- counting by hand


def test_head_matches_by_hand():
    # one row, T = 7, prompt of 2: positions t = 1.. score head 0 against t+2 (t <= 4), head 1 against t+3 (t <= 3)
    tokens = torch.tensor([[10, 11, 12, 13, 14, 15, 16]])
    proposals = torch.full((2, 1, 7, 2), 99)
    proposals[0, 0, 1] = torch.tensor([13, 5])  # head 0 at t=1: target 13 at rank 0
    proposals[0, 0, 2] = torch.tensor([5, 14])  # t=2: target 14 at rank 1
    proposals[0, 0, 3] = torch.tensor([5, 6])  # t=3: target 15 missed
    proposals[0, 0, 4] = torch.tensor([16, 5])  # t=4: target 16 at rank 0
    proposals[0, 0, 5] = torch.tensor([16, 16])  # t=5: no target (index 7) -> not scored
    proposals[1, 0, 1] = torch.tensor([14, 0])  # head 1 at t=1: target 14 at rank 0
    proposals[1, 0, 3] = torch.tensor([0, 16])  # t=3: target 16 at rank 1
    proposals[1, 0, 0] = torch.tensor([13, 13])  # t=0 is inside the prompt: not scored
    counts = head_matches(proposals, tokens, prompt_len=2)
    assert counts.count.tolist() == [[2, 1], [1, 1]]
    assert counts.total.tolist() == [4, 3]
    np.testing.assert_allclose(counts.table(), [[0.5, 0.25], [1 / 3, 1 / 3]])


def test_head_matches_counts_every_row_and_skips_heads_without_targets():
    tokens = torch.zeros(3, 4, dtype=torch.long)
    proposals = torch.zeros(3, 3, 4, 1, dtype=torch.long)  # every proposal right where scored
    counts = head_matches(proposals, tokens, prompt_len=2)
    # positions from 1: head 0 scores t=1 (target 3), head 1 needs t+3 <= 3: none, head 2 none
    assert counts.count[:, 0].tolist() == [3, 0, 0] and counts.total.tolist() == [3, 0, 0]
    with pytest.raises(ConfigError, match="never scored"):
        counts.table()


@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.27753), (5, 10, 0.23659, 0.76341), (10, 10, 0.72247, 1.0), (1, 100, 0.00177, 0.05449),
])
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert (float(lo), float(hi)) == pytest.approx((low, high), abs=1e-5)


def test_wilson_interval_contains_the_estimate_and_shrinks_with_n():
    k = np.array([0, 3, 7, 50, 99, 100])
    lo, hi = wilson_interval(k, 100)
    assert (lo <= k / 100).all() and (k / 100 <= hi).all() and (lo >= 0).all() and (hi <= 1).all()
    lo2, hi2 = wilson_interval(k * 10, 1000)
    assert ((hi2 - lo2) < (hi - lo)).all()
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_table_file_is_what_trees_are_built_from(tmp_path):
    counts = AcceptanceCounts(np.array([[6, 2, 1], [4, 3, 0]]), np.array([10, 8]))
    frame = counts.frame()
    assert list(frame.columns) == acceptance.TABLE_COLUMNS
    assert frame["total"].tolist() == [10, 10, 10, 8, 8, 8]
    path = tmp_path / "acceptance.csv"
    write_csv(frame, path)
    np.testing.assert_allclose(load_acceptance_table(path), [[0.6, 0.2, 0.1], [0.5, 0.375, 0.0]])


# --------------------------------------------------------------------------- the offset convention, end to end


class LookupHeads(torch.nn.Module):
    """Heads that know the base model's greedy future: at the hidden state of position t of a
    reference greedy run, head i ranks the true token t+2+i at ``rank_of(t, i)`` (None: out of top-k)."""

    def __init__(self, model, reference, rank_of, num_heads=3, vocab=VOCAB):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.num_heads, self.vocab, self.ref, self.rank_of = num_heads, vocab, reference, rank_of
        with torch.inference_mode():
            self.hidden = model.model(input_ids=reference).last_hidden_state.reshape(-1, model.config.hidden_size)
        self.order = torch.randperm(vocab, generator=torch.Generator().manual_seed(1)).tolist()

    def forward(self, x):  # [b, T, h] -> [K, b, T, V]
        b, length, _ = x.shape
        out = torch.zeros(self.num_heads, b, length, self.vocab)
        for row in range(b):
            for pos in range(length):
                dist = (self.hidden - x[row, pos].float()).norm(dim=-1)
                ref_row, t = divmod(int(dist.argmin()), self.ref.shape[1])
                for i in range(self.num_heads):
                    order = list(self.order)
                    if float(dist.min()) < 1e-3 and t + 2 + i < self.ref.shape[1]:
                        tok = int(self.ref[ref_row, t + 2 + i])
                        order.remove(tok)
                        r = self.rank_of(t, i)
                        order.insert(len(order) if r is None else r, tok)
                    out[i, row, pos, torch.tensor(order)] = torch.arange(self.vocab, 0, -1, dtype=torch.float32)
        return out


def schedule(t, i):
    return [0, 1, None, 0, 2][(t + 2 * i) % 5]


def test_measured_counts_follow_the_offset_convention(model):
    prompts = random_prompts(VOCAB, 2, 5, seed=3)
    new = 12
    reference = greedy_generate(model, torch.tensor(prompts), new + 8)[0]
    heads = LookupHeads(model, reference, schedule)
    counts = acceptance.measure_acceptance(model, heads, prompts, new, top_k=3)
    want = AcceptanceCounts.zeros(3, 3)
    for _row in range(2):
        for i in range(3):
            for t in range(5 - 1, 5 + new - 2 - i):  # last prompt token .. last t with token t+2+i generated
                want.total[i] += 1
                if schedule(t, i) is not None:
                    want.count[i, schedule(t, i)] += 1
    assert counts.total.tolist() == want.total.tolist() == [2 * (new - 1), 2 * (new - 2), 2 * (new - 3)]
    assert counts.count.tolist() == want.count.tolist()


def test_perfect_heads_by_this_measure_are_perfect_in_real_generation(model):
    """Accuracy 1 at rank 0 (as measured here) must mean every chain step accepts depth + 1 tokens in
    medusa_generate: the measured offset is the one real decoding uses."""
    prompts = random_prompts(VOCAB, 2, 6, seed=4)
    new = 13
    reference = greedy_generate(model, torch.tensor(prompts), new + 8)[0]
    heads = LookupHeads(model, reference, lambda t, i: 0)
    runs = acceptance.greedy_runs(model, prompts, new)
    table = acceptance.measure_acceptance(model, heads, prompts, new, top_k=2, runs=runs).table()
    np.testing.assert_allclose(table, [[1, 0]] * 3)
    gen = acceptance.generation_rows(model, heads, prompts, table, [4], new, runs).iloc[0]
    assert gen["depth"] == 3 and gen["expected_tokens_per_step"] == 4.0
    assert gen["identical_to_greedy"] and gen["prompts"] == 2
    assert gen["tokens_per_step"] == pytest.approx(4.0)  # 3 full steps of 4 tokens cover 12 of 13 new tokens
    assert json.loads(gen["paths"]) == [[0], [0, 0], [0, 0, 0]]


def test_generation_rows_reject_trees_the_table_cannot_build(model):
    with pytest.raises(ConfigError, match="candidates 40 is outside 2..31"):
        acceptance.generation_rows(model, None, [[1, 2]], np.full((2, 5), 0.1), [40], 4, [])


# --------------------------------------------------------------------------- prompt files


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    char_tokenizer().save_pretrained(path)
    return load_tokenizer(path)


def test_prompt_files(tmp_path, tokenizer):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"input_ids": [1, 5, 7]}\n\n{"prompt": "ab c"}\n{"text": "z."}\n')
    assert read_prompt_file(jsonl, tokenizer) == [[1, 5, 7], [1, 5, 6, 3, 7], [1, 30, 4]]
    text = tmp_path / "p.txt"
    text.write_text("ab c\n\nz.\n")
    assert read_prompt_file(text, tokenizer) == [[1, 5, 6, 3, 7], [1, 30, 4]]
    ids_only = tmp_path / "ids.jsonl"
    ids_only.write_text('{"input_ids": [3, 4]}\n')
    assert read_prompt_file(ids_only) == [[3, 4]]
    assert random_prompts(100, 3, 4, seed=1) == random_prompts(100, 3, 4, seed=1) != random_prompts(100, 3, 4)


@pytest.mark.parametrize("name, content, fragment", [
    ("bad.jsonl", '{"input_ids": [1]}\n{oops\n', "bad.jsonl line 2 is not valid JSON"),
    ("bad.jsonl", '{"input_ids": [1, -2]}\n', "bad.jsonl line 1: \"input_ids\" must be a non-empty list"),
    ("bad.jsonl", '[1, 2]\n', "bad.jsonl line 1 must be a JSON object"),
    ("bad.jsonl", '{"other": 1}\n', "bad.jsonl line 1 has neither"),
    ("bad.jsonl", '{"input_ids": [1, 300]}\n', "bad.jsonl line 1 has token id 300, beyond the model's vocabulary"),
    ("bad.txt", "hello\n", "bad.txt line 1 is text, which needs a tokenizer"),
    ("empty.txt", "\n\n", "empty.txt holds no prompts"),
])
def test_prompt_file_errors_name_the_file_and_line(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match="^prompts: ") as err:
        read_prompt_file(path, None, VOCAB)
    assert fragment in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        read_prompt_file(tmp_path / "missing.txt")


# --------------------------------------------------------------------------- heads files


def reference_layout_state(hidden=64, vocab=VOCAB, num_heads=2, dtype=torch.bfloat16):
    """Keys and dtype as the reference trainer writes ``medusa_lm_head``: the ModuleList's own state dict."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for h in range(num_heads):
        state[f"{h}.0.linear.weight"] = torch.randn(hidden, hidden, generator=gen).to(dtype)
        state[f"{h}.0.linear.bias"] = torch.randn(hidden, generator=gen).to(dtype)
        state[f"{h}.1.weight"] = torch.randn(vocab, hidden, generator=gen).to(dtype)
    return state


@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_reference_medusa_lm_head_layout_loads(tmp_path, suffix):
    state = reference_layout_state()
    path = tmp_path / f"medusa_lm_head.{suffix}"
    if suffix == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    heads = load_medusa_heads(path, 64, VOCAB)
    assert (heads.num_heads, heads.num_layers) == (2, 1)
    x = torch.randn(1, 1, 64)
    block = state["1.0.linear.weight"].float(), state["1.0.linear.bias"].float()
    y = x + torch.nn.functional.silu(x @ block[0].T + block[1])
    torch.testing.assert_close(heads(x)[1], y @ state["1.1.weight"].float().T)


def test_saved_heads_use_the_reference_keys_and_round_trip(tmp_path):
    heads = MedusaHeads(64, VOCAB, num_heads=3, num_layers=1, seed=5)
    path = save_medusa_heads(heads, tmp_path / "medusa_lm_head.safetensors")
    assert sorted(load_file(str(path))) == sorted(f"{h}.{k}" for h in range(3)
                                                  for k in ("0.linear.weight", "0.linear.bias", "1.weight"))
    back = load_medusa_heads(path, 64, VOCAB)
    x = torch.randn(2, 1, 64)
    torch.testing.assert_close(back(x), heads(x))


# --------------------------------------------------------------------------- CLI: results and clear errors


def test_cli_acceptance_random_prompts(tmp_path, capsys):
    heads = tmp_path / "heads.safetensors"
    save_medusa_heads(MedusaHeads(64, VOCAB, num_heads=2), heads)
    out = tmp_path / "out"
    rc = main(["acceptance", "--model", "tiny", "--heads", str(heads), "--random-prompts", "2", "--prompt-len", "4",
               "--max-new-tokens", "8", "--top-k", "3", "--candidates", "4", "6", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "head 1:" in text and "identical to greedy: yes" in text
    table = load_acceptance_table(out / "acceptance.csv")
    assert table.shape == (2, 3)
    summary = json.loads((out / "acceptance.json").read_text())
    assert summary["prompts"] == {"kind": "random", "count": 2, "length": 4, "seed": 0}
    assert summary["scored_positions"] == [2 * 7, 2 * 6]


@pytest.mark.parametrize("setup, fragment", [
    (lambda d: (d / "h.safetensors").write_bytes(b"not safetensors"), "heads: cannot read Medusa heads file"),
    (lambda d: None, "heads: Medusa heads file"),
    (lambda d: save_file({"0.0.linear.weight": torch.zeros(3, 3), "0.0.linear.bias": torch.zeros(3),
                          "0.1.weight": torch.zeros(VOCAB, 3)}, str(d / "h.safetensors")), "has shape ("),
    (lambda d: save_file({"lm_head.weight": torch.zeros(3, 3)}, str(d / "h.safetensors")), "unexpected key"),
])
def test_cli_acceptance_bad_heads_file_writes_nothing(tmp_path, capsys, setup, fragment):
    setup(tmp_path)
    out = tmp_path / "out"
    rc = main(["acceptance", "--model", "tiny", "--heads", str(tmp_path / "h.safetensors"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: heads: ") and fragment in err and "h.safetensors" in err
    assert not out.exists()


def test_cli_acceptance_bad_prompt_file_writes_nothing(tmp_path, capsys):
    heads = save_medusa_heads(MedusaHeads(64, VOCAB, num_heads=2), tmp_path / "h.safetensors")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"input_ids": [1, 2]}\nnot json\n')
    out = tmp_path / "out"
    rc = main(["acceptance", "--model", "tiny", "--heads", str(heads), "--prompts", str(prompts), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "prompts.jsonl line 2 is not valid JSON" in err
    assert not out.exists()
