"""The roofline predictor by hand: max(flops / peak, bytes / bandwidth, launches x per_launch), and its calibrations."""

from __future__ import annotations

import numpy as np
import pytest

from medusa_roofline.analytic.costmodel import Cost, launches
from medusa_roofline.analytic.hardware import Hardware
from medusa_roofline.analytic.predict import (DATASHEET_PER_LAUNCH_S, Calibration, datasheet_calibration, limiter,
                                              measured_calibration, op_time, step_time)
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.models.source import ModelDims

ONES = ModelDims(hidden=1, heads=1, kv_heads=1, head_dim=1, intermediate=1, layers=1, vocab=1, max_positions=0)
CAL = Calibration("hand", peak_flops=10.0, bandwidth=4.0, per_launch_s=0.5, source="by hand")


@pytest.mark.parametrize("flops,nbytes,k,expected,kind", [
    (100, 8, 1, 10.0, "compute"),  # 100 / 10 beats 8 / 4 and 0.5
    (10, 40, 1, 10.0, "memory"),  # 40 / 4
    (1, 1, 1, 0.5, "launch"),  # 0.1, 0.25 < 0.5
    (1, 1, 6, 3.0, "launch"),  # six launches
])
def test_op_time_is_the_slowest_term(flops, nbytes, k, expected, kind):
    cost = Cost(flops, nbytes)
    assert op_time(cost, CAL, k) == pytest.approx(expected)
    assert limiter(cost, CAL, k) == kind


def test_op_time_on_arrays():
    cost = Cost(np.array([100, 10, 1]), np.array([8, 40, 1]))
    assert op_time(cost, CAL).tolist() == pytest.approx([10.0, 10.0, 0.5])
    assert list(limiter(cost, CAL)) == ["compute", "memory", "launch"]


def test_step_time_is_launch_bound_when_the_floor_dominates():
    """A huge floor: every op costs its launches; a float32 layer launches 38 kernels, the once-per-step
    ops 8 (embedding 1, final norm 6, lm_head 1), one Medusa head with one residual block 5."""
    floor = Calibration("floor", 1e30, 1e30, 1.0, "floor only")
    assert step_time(ONES, 1, 1, 2, 4, floor) == 38 + 8
    assert step_time(ONES, 1, 1, 2, 4, floor, layers=3) == 3 * 38 + 8
    assert step_time(ONES, 1, 2, 3, 4, floor, num_heads=1, heads_tokens=2) == 38 + 8 + 5
    assert launches("medusa_heads", 4, num_heads=1) == 5
    # 16-bit: the norms' casts (3 norms x 2); the lean eager softmax runs in the scores' dtype (no cast)
    assert step_time(ONES, 1, 1, 2, 2, floor) == 38 + 8 + 2 + 2 + 2


def test_calibrations():
    hw = Hardware("gpu", "Some GPU", bandwidth=2e12, peak_flops=3e14, source="datasheet")
    ds = datasheet_calibration(hw)
    assert (ds.name, ds.peak_flops, ds.bandwidth, ds.per_launch_s) == ("datasheet", 3e14, 2e12, DATASHEET_PER_LAUNCH_S)
    assert datasheet_calibration(hw, 5e-6).per_launch_s == 5e-6
    ceilings = {"device_name": "cpu", "bandwidth_bytes_per_s": 2e10, "peak_flops_per_s": 1e11, "per_launch_s": 2e-6,
                "matmul": {"bfloat16": {"median": 3e11}}}
    m = measured_calibration(ceilings, "bfloat16")
    assert (m.name, m.peak_flops, m.bandwidth, m.per_launch_s) == ("measured", 3e11, 2e10, 2e-6)
    assert measured_calibration(ceilings, "float32").peak_flops == 1e11
    with pytest.raises(ConfigError, match="per_launch_s"):
        measured_calibration({k: v for k, v in ceilings.items() if k != "per_launch_s"})
