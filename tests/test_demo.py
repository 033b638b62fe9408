"""The self-contained demo: a seeded synthetic language, deterministic training of the base model and
of Medusa heads, and (slow) the whole demo end to end, which must really accept tokens."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from medusa_roofline.cli import main
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.train_heads import HeadsSpec, heads_loss, train_heads
from medusa_roofline.decoding.tree import load_acceptance_table
from medusa_roofline.demo import DemoSpec, torch_threads
from medusa_roofline.models import synthetic
from medusa_roofline.models.train import BaseSpec, lr_at, train_base

torch.set_num_threads(1)

SMALL_BASE = BaseSpec(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, steps=4, batch=4, seq_len=24)


def test_language_is_seeded_and_structured():
    lang = synthetic.make_language(0)
    assert lang == synthetic.make_language(0) != synthetic.make_language(1)
    assert len(set(lang.words)) == 24 and all(2 <= len(w) <= 6 for w in lang.words)
    text = synthetic.sample_text(lang, np.random.default_rng(5), 200)
    assert text == synthetic.sample_text(lang, np.random.default_rng(5), 200) and len(text) == 200
    words = text.replace(".", "").split()
    assert set(words[:-1]) <= set(lang.words)  # the last word may be cut
    for a, b in zip(text.split(". ")[0].split(), text.split(". ")[0].split()[1:]):  # inside one sentence
        assert lang.words.index(b) in lang.successors[lang.words.index(a)]


def test_char_tokenizer_matches_encode():
    tok = synthetic.char_tokenizer()
    text = "ab cd. zy"
    assert tok(text).input_ids == synthetic.encode(text)
    assert synthetic.decode(synthetic.encode(text)) == text
    with pytest.raises(ConfigError, match="not in the synthetic alphabet"):
        synthetic.encode("A")


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1 + 0.9 / 90) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_base_training_is_deterministic():
    lang = synthetic.make_language(0)
    m1, l1 = train_base(lang, SMALL_BASE)
    m2, l2 = train_base(lang, SMALL_BASE)
    assert l1 == l2 and len(l1) == 4
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    other, _ = train_base(lang, dataclasses.replace(SMALL_BASE, seed=1))
    assert not torch.equal(other.lm_head.weight, m1.lm_head.weight)


def test_heads_loss_pairs_position_t_with_token_t_plus_2_plus_i():
    vocab, length, prompt = 5, 6, 2
    tokens = torch.tensor([[0, 1, 2, 3, 4, 0]])
    logits = torch.full((2, 1, length, vocab), -30.0)
    for t in range(length):
        for i in range(2):
            if t + 2 + i < length:
                logits[i, 0, t, tokens[0, t + 2 + i]] = 30.0  # perfect at the right offset
    loss, per_head = heads_loss(logits, tokens, prompt)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and len(per_head) == 2
    shifted = logits.roll(1, dims=2)  # one position off: every scored target is wrong
    assert heads_loss(shifted, tokens, prompt)[1][0] > 10
    with pytest.raises(ConfigError, match="leave head 1 no target"):
        heads_loss(logits, tokens, 4)


def test_heads_training_is_deterministic_and_starts_from_the_lm_head():
    model, _ = train_base(synthetic.make_language(0), SMALL_BASE)
    prompts = torch.from_numpy(synthetic.sample_batch(synthetic.make_language(0), np.random.default_rng(2), 6, 8))
    spec = HeadsSpec(num_heads=2, new_tokens=8, steps=3, batch=4)
    h1, l1 = train_heads(model, prompts, spec)
    h2, l2 = train_heads(model, prompts, spec)
    assert l1 == l2 and len(l1) == 3
    for (k, a), (_, b) in zip(h1.state_dict().items(), h2.state_dict().items()):
        assert torch.equal(a, b), k
    untrained, _ = train_heads(model, prompts, HeadsSpec(num_heads=2, new_tokens=8, steps=1, batch=4, lr=0.0))
    torch.testing.assert_close(untrained.medusa_head[1][-1].weight, model.lm_head.weight)
    assert not untrained.medusa_head[0][0].linear.weight.any()  # residual starts as the identity


def test_demo_spec_from_config_and_errors():
    spec = DemoSpec.from_dict({"seed": 3, "base": {"steps": 7}, "candidates": [4, 8], "tree": 8})
    assert spec.base.steps == 7 and spec.base.seed == 3 and spec.heads.seed == 3 and spec.candidates == (4, 8)
    with pytest.raises(ConfigError, match="demo: unknown key"):
        DemoSpec.from_dict({"nope": 1})
    with pytest.raises(ConfigError, match="demo.base: unknown key"):
        DemoSpec.from_dict({"base": {"width": 1}})
    with pytest.raises(ConfigError, match="demo.tree: 16 must be one of"):
        DemoSpec.from_dict({"candidates": [4, 8]})


def test_torch_threads_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_demo_end_to_end_accepts_tokens(tmp_path, capsys):
    """The documented demo: trained locally, measured, and Medusa really accepts tokens (quality bar,
    not a timing: >= 2.0 tokens per step with the default tree, output identical to greedy)."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    tree = summary["default_tree"]
    assert tree["candidates"] == 16 and tree["identical_to_greedy"]
    assert tree["tokens_per_step"] >= 2.0, tree
    table = load_acceptance_table(out / "acceptance.csv")
    assert table.shape == (4, 10) and table[0, 0] > 0.5
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    assert (out / "medusa_lm_head.safetensors").is_file()
    speedup = pd.read_csv(out / "speedup.csv")
    assert set(speedup["acceptance"]) == {"measured table", "real generation"}
    assert "default demo tree (16 candidates)" in text and "head 3:" in text


def test_schema_defaults_are_the_demo_spec_defaults():
    """The workflow (config/schema.yaml defaults) and the CLI (DemoSpec) train the same demo."""
    import yaml

    from medusa_roofline.core.paths import REPO_ROOT
    from medusa_roofline.repro.acceptance_settings import DEMO_TRAINING_KEYS

    schema = yaml.safe_load((REPO_ROOT / "config" / "schema.yaml").read_text())["properties"]["demo"]["properties"]
    spec = DemoSpec().to_dict()
    for key in DEMO_TRAINING_KEYS:
        if key in ("base", "heads"):
            for sub, prop in schema[key]["properties"].items():
                assert prop["default"] == spec[key][sub], f"demo.{key}.{sub}"
        else:
            assert schema[key]["default"] == (list(spec[key]) if isinstance(spec[key], tuple) else spec[key]), key


def test_parse_time_demo_shapes_match_the_model_it_trains():
    """The workflow sizes the demo model before it exists (repro/acceptance_settings.py): the same shapes."""
    from medusa_roofline.repro.acceptance_settings import DEMO_VOCAB

    assert DEMO_VOCAB == len(synthetic.SYMBOLS) == synthetic.make_language(0).vocab_size
