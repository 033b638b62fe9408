"""Nested `--config` overrides: string leaves typed as the schema says, everything else left to validation."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, run_snakemake_here

from medusa_roofline.repro.overrides import retype, type_overrides

SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def cli(text: str) -> dict:
    """What Snakemake makes of `--config key=<mapping>`: YAML's BaseLoader, every scalar a string."""
    return yaml.load(text, Loader=yaml.BaseLoader)


def test_nested_values_get_the_schemas_types():
    got = retype(cli('{measure: {batch: [4, 8], reps: 5, device_label: null, max_memory_gb: 1.5}, '
                     'speedup: {batch: 2}, plot: {dpi: 100, width: 7}}'), SCHEMA)
    assert got == {"measure": {"batch": [4, 8], "reps": 5, "device_label": None, "max_memory_gb": 1.5},
                   "speedup": {"batch": 2}, "plot": {"dpi": 100, "width": 7}}
    assert type(got["plot"]["width"]) is int and type(got["measure"]["max_memory_gb"]) is float


def test_strings_stay_strings_where_the_schema_wants_strings():
    text = '{run_name: "007", analytic: {hardware: [h100-sxm], dtype: float16, models: ["1"]}, display_names: {x: "2"}}'
    assert retype(cli(text), SCHEMA) == cli(text)


def test_values_the_schema_forbids_are_left_for_validation_to_reject():
    got = retype(cli("{measure: {batch: [four], reps: 1.5, device: 3}, analytic: {attention: 1}}"), SCHEMA)
    assert got == {"measure": {"batch": ["four"], "reps": "1.5", "device": "3"}, "analytic": {"attention": "1"}}


def test_typed_overrides_replace_only_the_given_keys():
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    overrides = cli('{batch: [4]}')
    config["measure"].update(overrides)  # what Snakemake's merge leaves behind
    type_overrides(config, {"measure": overrides}, SCHEMA)
    assert config["measure"]["batch"] == [4]
    assert {k: v for k, v in config["measure"].items() if k != "batch"} == \
        {k: v for k, v in CONFIG["measure"].items() if k != "batch"}
    assert config["analytic"] == CONFIG["analytic"]


@pytest.mark.workflow
@pytest.mark.parametrize("override,ok,expected", [
    ('measure={"batch": [4]}', True, "sweep"),
    ('measure={"kv_len": [100000]}', False, "measure.kv_len: 100112 tokens"),  # typed: reached the grid check
    ('measure={"batch": [0]}', False, "On instance['measure']['batch'][0]"),
])
def test_nested_config_on_the_command_line(tmp_path, override, ok, expected):
    run = run_snakemake_here(tmp_path, None, "-n", "--configfile", str(REPO / "config" / "config.yaml"),
                        "--config", override)
    assert (run.returncode == 0) == ok, run.stderr[-3000:]
    assert expected in run.stdout + run.stderr
