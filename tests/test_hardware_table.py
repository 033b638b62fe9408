"""The shipped hardware table: every entry sourced and plausible, and real device names mapped to the
most specific entry (never a substring accident)."""

from __future__ import annotations

import re

import pytest
import yaml

from medusa_roofline.analytic.hardware import DEFAULT_TABLE, detect_hardware, load_table, match_device
from medusa_roofline.core.errors import ConfigError

# Device names exactly as torch.cuda.get_device_name() reports them (the NVIDIA driver's product
# names; ROCm's marketing names for AMD), and the entry each must map to (None: no datasheet entry).
REAL_DEVICE_NAMES = {
    "NVIDIA A100-SXM4-80GB": "a100-80gb-sxm",
    "NVIDIA A100-SXM4-40GB": "a100-40gb-sxm",
    "NVIDIA A100 80GB PCIe": "a100-80gb-pcie",
    "NVIDIA A100-PCIE-40GB": "a100-40gb-pcie",
    "NVIDIA A40": "a40",
    "NVIDIA L40S": "l40s",
    "NVIDIA H100 80GB HBM3": "h100-sxm",
    "NVIDIA H100 PCIe": "h100-pcie",
    "NVIDIA H100 NVL": "h100-nvl",
    "NVIDIA H200": "h200",
    "NVIDIA H200 NVL": "h200-nvl",
    "NVIDIA GH200 480GB": "gh200",
    "NVIDIA GH200 120GB": "gh200",
    "NVIDIA GH200 144G HBM3e": "gh200-144gb-hbm3e",
    "NVIDIA B200": "b200",
    "AMD Instinct MI300X": "mi300x",
    "AMD Instinct MI300X VF": "mi300x",
    # Near misses that a substring match would get wrong, and cards without an entry.
    "NVIDIA RTX A4000": None,  # not the A40
    "NVIDIA RTX A400": None,
    "NVIDIA A10G": None,
    "NVIDIA L40": None,  # not the L40S
    "NVIDIA H100": None,  # H100 SXM5 94GB: no datasheet column
    "NVIDIA H800": None,
    "NVIDIA H20": None,
    "NVIDIA H20-3e": None,
    "NVIDIA GB200": None,  # not the B200
    "NVIDIA A800-SXM4-80GB": None,
    "NVIDIA A100-SXM-64GB": None,
    "AMD Instinct MI300A": None,
    "NVIDIA GeForce RTX 4090": None,
    "AMD EPYC 7B13": None,
}

# The entries the paper reproduction reads (pinned byte for byte elsewhere): their numbers never move.
EXISTING = {
    "a100-80gb-pcie": (1.935e12, 312.0e12),
    "a100-80gb-sxm": (2.039e12, 312.0e12),
    "a40": (696.0e9, 149.7e12),
    "h100-sxm": (3.35e12, 989.0e12),
    "h100-pcie": (2.0e12, 756.0e12),
    "h200": (4.8e12, 989.0e12),
}


@pytest.fixture(scope="module")
def table():
    return load_table(DEFAULT_TABLE)


@pytest.mark.parametrize("name,key", REAL_DEVICE_NAMES.items())
def test_real_device_names_map_to_the_most_specific_entry(table, name, key):
    hw = match_device(table, name)
    assert (hw.key if hw else None) == key


def test_every_match_string_is_its_own_entrys(table):
    for hw in table.values():
        for pattern in hw.match:
            assert match_device(table, f"NVIDIA {pattern}").key == hw.key, pattern


def test_every_entry_is_sourced_and_plausible(table):
    for hw in table.values():
        assert re.search(r"https://\S+", hw.source), f"{hw.key}: source names no datasheet URL"
        assert hw.display_name.strip() and hw.match, hw.key
        assert 1e11 <= hw.bandwidth <= 2e13, f"{hw.key}: {hw.bandwidth:.3g} B/s"
        assert 1e13 <= hw.peak_flops <= 1e16, f"{hw.key}: {hw.peak_flops:.3g} FLOP/s"
        assert 10 <= hw.ridge <= 1000, f"{hw.key}: ridge {hw.ridge:.1f} FLOP/B"


def test_the_requested_gpus_are_in_the_table(table):
    wanted = {"a100-40gb-pcie", "a100-40gb-sxm", "l40s", "h100-pcie", "h100-sxm", "h100-nvl", "h200",
              "h200-nvl", "gh200", "b200", "mi300x"}
    assert wanted <= set(table)


def test_existing_entries_keep_their_numbers(table):
    assert {k: (table[k].bandwidth, table[k].peak_flops) for k in EXISTING} == EXISTING


def entry(**overrides):
    return {"display_name": "Test GPU", "bandwidth": 1e12, "peak_flops": 1e14, "source": "test", **overrides}


def test_adding_a_gpu_is_one_yaml_entry(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump({"test-gpu": entry(match=["Test GPU 9000"]),
                                    "test-gpu-nvl": entry(match=["Test GPU 9000 NVL"])}))
    table = load_table(path)
    assert detect_hardware(table, "ACME Test GPU 9000").key == "test-gpu"
    assert detect_hardware(table, "ACME Test-GPU-9000 NVL").key == "test-gpu-nvl"


@pytest.mark.parametrize("entries,expected", [
    ({"a": entry(match="A40")}, ["hardware.a.match", "hw.yaml", "must be a list of device names"]),
    ({"a": entry(match=["  "])}, ["hardware.a.match", "must be a list"]),
    ({"a": entry(match=["X1 PCIe"]), "b": entry(match=["x1-pcie"])},
     ["hardware.b.match", "'x1-pcie'", "also a match of hardware.a"]),
])
def test_bad_match_lists_name_the_key_and_file(tmp_path, entries, expected):
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump(entries))
    with pytest.raises(ConfigError) as err:
        load_table(path)
    for text in expected:
        assert text in str(err.value)
