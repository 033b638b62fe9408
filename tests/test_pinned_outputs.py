"""The default config's analytic tables and analytic figure CSVs, byte for byte.

These files are the reproduction of the paper's charts; a refactoring must not change a byte of
them. A change that is meant to change them (a new column, a renamed series) updates the pins here
(and test_faults.CKPT_PINNED, the same outputs for a local checkpoint) in the same commit, and says why in
its message.
"""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, changed_pins

PINNED = {
    "results/analytic/llama-33b/a100-80gb-pcie.csv": "199896f5eab318be673165a49edf60f73b7af53434ca59d4c075b0da78b3940d",
    "results/analytic/llama-33b/a40.csv": "249634fdc9ab36bc4902e985e3c7913d253d4f9491b619f35ed566db375fc44e",
    "results/figures/llama-33b/a100-80gb-pcie/qkpv_medusa.csv": "a4499f44153af5c435e8d98fef24ac697d9bdf8a97fe8a567073fdb7ccd56f60",
    "results/figures/llama-33b/a40/qkpv_medusa.csv": "676042a5aae213ea0e20c7f56253ebd03a6145cd45fe95e0c830815ba2373291",
    "results/figures/llama-33b/a100-80gb-pcie/all_ops.csv": "62742977b927fe2d26daed89e351f22230b72f558844c9c312314c258b93a9f2",
    "results/figures/llama-33b/a40/all_ops.csv": "3610bd0422e5c977bf149f16ffe334fe7ac3dc4f4ab39e858b9f03ead87bb870",
    "results/figures/llama-33b/a100-80gb-pcie/mlp_spec.csv": "61a33fc6b03db1d1534cba9ab25a19e9e1cbc88ffae5453ac05736c7a4fcc056",
    "results/figures/llama-33b/a40/mlp_spec.csv": "e42782e70c4674f5cde9e2a4e4f54d89ee49e8a52126914db236f02d292874a7",
    "results/figures/llama-7b/a100-80gb-pcie/speedup.csv": "322c128a4be03a54c506e53970bb7a66b281ecc61a7a24fcc887540109e3aa7f",
}


@pytest.mark.workflow
def test_default_analytic_outputs_are_pinned(shared_run):
    """The shipped default config builds the pinned bytes. They are read from the session's shared run
    (conftest.shared_run), whose config is the shipped one but for the measuring sections, the figure
    formats and one more best-tree model, which no analytic output reads."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["analytic"]["models"] == ["llama-33b"], "the pins are for the shipped default config"
    measuring = {"measure", "microbench", "ceilings"}
    shared = shared_run.config
    assert shared.keys() == config.keys()
    assert {key: shared[key] for key in config if key not in measuring | {"plot", "best_tree"}} == \
        {key: config[key] for key in config if key not in measuring | {"plot", "best_tree"}}
    assert dict(shared["plot"], formats=None) == dict(config["plot"], formats=None)
    assert dict(shared["best_tree"], models=None) == dict(config["best_tree"], models=None)
    assert shared["measure"]["acceptance_table"] == config["measure"]["acceptance_table"]  # speedup's default
    changed = changed_pins(shared_run.workdir, PINNED)
    assert not changed, f"changed bytes: {changed}"
