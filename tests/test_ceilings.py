"""Measured ceilings (small sizes on CPU) and matching a device name to the hardware table."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from medusa_roofline.analytic.hardware import (
    detect_hardware,
    load_table,
    measured_hardware,
    measured_roofs,
)
from medusa_roofline.core.dtypes import canonical_dtype
from medusa_roofline.measure.ceilings import measure_ceilings, throughput_stats
from medusa_roofline.measure.timing import Stats

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def table():
    return load_table(REPO / "config" / "hardware.yaml")


@pytest.fixture(scope="module")
def cpu_ceilings():
    return measure_ceilings("cpu", "float32", reps=3, warmup=1, copy_bytes=4 << 20, matmul_n=96, flush_l2=False)


def test_cpu_ceilings_positive_with_spread(cpu_ceilings):
    c = cpu_ceilings
    assert c["device_type"] == "cpu" and c["device_name"] and c["cpu_model"] == c["device_name"]
    assert set(c["bandwidth"]) == {"copy", "read"}
    assert set(c["matmul"]) == {"float32", "bfloat16"}  # CPU: both sweep dtypes get a roof
    for entry in list(c["bandwidth"].values()) + list(c["matmul"].values()):
        assert entry["median"] > 0 and entry["reps"] == 3
        assert entry["p10"] <= entry["median"] <= entry["p90"]
    assert c["bandwidth"]["copy"]["bytes_per_rep"] == 2 * c["bandwidth"]["copy"]["buffer_bytes"]
    assert c["matmul"]["float32"]["flops_per_rep"] == 2 * 96**3
    assert c["bandwidth_bytes_per_s"] == max(v["median"] for v in c["bandwidth"].values())
    assert c["peak_flops_per_s"] == c["matmul"]["float32"]["median"]
    assert c["versions"]["torch"] and c["threads"] >= 1
    floor = c["launch_floor"]  # what the metrics' launch-bound flag compares with
    assert floor["floor_s"] == max(floor["one_element_kernel"]["median"], floor["empty_region"]["median"]) > 0
    assert floor["floor_s"] < 1e-2
    json.dumps(c)  # JSON-able as is


def test_cpu_per_launch_cost(cpu_ceilings):
    """Seconds per one-element kernel launch, back to back, with spread; not the launch floor (one op alone)."""
    per = cpu_ceilings["per_launch"]
    assert per["launches_per_rep"] == 100 and per["reps"] == 3
    assert 0 < per["p10"] <= per["median"] <= per["p90"] < 1e-2  # microseconds, not seconds
    assert cpu_ceilings["per_launch_s"] == per["median"]
    assert "launch_floor_s" not in cpu_ceilings  # one name, one meaning: that is a measured row's column


def test_the_timing_thread_count_is_set_and_recorded():
    import torch

    from medusa_roofline.measure.timing import use_threads

    before = torch.get_num_threads()
    try:
        assert use_threads(1) == 1
        c = measure_ceilings("cpu", "float32", reps=1, warmup=0, copy_bytes=1 << 20, matmul_n=16, flush_l2=False)
        assert c["threads"] == 1
        assert use_threads(None) == 1  # None leaves it as it is
        with pytest.raises(ValueError, match="threads must be >= 1"):
            use_threads(0)
    finally:
        torch.set_num_threads(before)


def test_measured_roofs_pick_the_rows_dtype(cpu_ceilings):
    peak_bf16, bw = measured_roofs(cpu_ceilings, "bfloat16")
    assert peak_bf16 == cpu_ceilings["matmul"]["bfloat16"]["median"]
    assert bw == cpu_ceilings["bandwidth_bytes_per_s"]
    assert measured_roofs(cpu_ceilings, "float16")[0] == cpu_ceilings["peak_flops_per_s"]  # not measured: headline
    hw = measured_hardware(cpu_ceilings)
    assert hw.ridge == pytest.approx(cpu_ceilings["peak_flops_per_s"] / cpu_ceilings["bandwidth_bytes_per_s"])


def test_throughput_spread_swaps_percentiles():
    s = Stats(median=2.0, p10=1.0, p90=4.0, reps=5, mean=2.2, min=1.0, max=4.0)
    t = throughput_stats(8.0, s)
    assert (t["median"], t["p10"], t["p90"]) == (4.0, 2.0, 8.0)


def test_dtype_resolution():
    assert canonical_dtype("auto", "cuda") == "float16"
    assert canonical_dtype("auto", "cpu") == "float32"
    assert canonical_dtype("bf16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        canonical_dtype("float8", "cpu")


def test_bad_arguments():
    with pytest.raises(ValueError, match="reps"):
        measure_ceilings("cpu", reps=0)
    with pytest.raises(ValueError, match="device"):
        measure_ceilings("mps", reps=1)


@pytest.mark.parametrize(
    "name,key",
    [
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb-sxm"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA A40", "a40"),
        ("NVIDIA H200", "h200"),
    ],
)
def test_detect_hardware_matches(table, name, key):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert detect_hardware(table, name).key == key


def test_unknown_device_is_described_once_as_information(table, caplog):
    """A CPU (any device without a datasheet entry) is expected: one INFO line that says how to add an
    entry, no warning (warnings on the default config would teach users to ignore warnings)."""
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG, logger="medusa_roofline"):
        warnings.simplefilter("error")
        assert detect_hardware(table, "AMD EPYC 7B13") is None
    records = [r for r in caplog.records if "AMD EPYC 7B13" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.INFO]
    message = records[0].getMessage()
    assert "config/hardware.yaml" in message and "match:" in message and "measured roofs only" in message


@pytest.mark.gpu
def test_cuda_ceilings():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    c = measure_ceilings("cuda", "auto", reps=5, warmup=2, copy_bytes=256 << 20, matmul_n=2048)
    assert c["dtype"] == "float16" and c["device_type"] == "cuda"
    assert c["bandwidth_bytes_per_s"] > 1e10 and c["peak_flops_per_s"] > 1e12
    assert c["device_name"] == torch.cuda.get_device_name()
    assert 0 < c["per_launch_s"] < 1e-4  # a few microseconds per launch on a GPU
