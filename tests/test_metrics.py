"""The measured x cost-model join: no row lost or duplicated, skipped statuses counted, arithmetic by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from medusa_roofline.analytic import costmodel
from medusa_roofline.analytic.costmodel import medusa_heads_cost, step_cost
from medusa_roofline.analytic.hardware import Hardware
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.models.source import ModelDims
from medusa_roofline.results.metrics import KEY_COLUMNS, METRIC_COLUMNS, compute_metrics, load_measured

TINY = ModelDims(hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, layers=2, vocab=256, max_positions=4096)
SMALL = ModelDims(hidden=4, heads=2, kv_heads=1, head_dim=2, intermediate=8, layers=3, vocab=10, max_positions=64)
CEILINGS = {"device": "cpu", "device_name": "Test CPU", "bandwidth_bytes_per_s": 1e5, "peak_flops_per_s": 1e6,
            "matmul": {"float16": {"median": 1e6}, "float32": {"median": 5e5}}}
SPEC = Hardware("spec", "Spec GPU", bandwidth=1e6, peak_flops=1e7, source="test")
LAYER = ["q_proj", "k_proj", "v_proj", "o_proj", "qk", "softmax", "pv", "gate_proj", "up_proj", "down_proj"]


def measured_frame(statuses=None, model="tiny", layers=2) -> pd.DataFrame:
    """A sweep-shaped table: ar + medusa-4, batch 1/2, kv_len 16/32, every op, some rows not ok."""
    rows = []
    for mode, phase, q in (("ar", "ar", 1), ("medusa-4", "medusa", 4)):
        ops = LAYER + ["lm_head"] + (["medusa_heads"] if phase == "medusa" else []) + ["remainder", "step"]
        for b in (1, 2):
            for s in (16, 32):
                for op in ops:
                    i = len(rows)
                    rows.append({
                        "bench": "sweep", "model": model, "device": "cpu", "device_name": "Test CPU",
                        "mode": mode, "phase": phase, "op": op, "scope": "layer" if op in LAYER else "model",
                        "candidates": q, "batch": b, "kv_len": s, "q_len": q, "keys": s + q, "layers": layers,
                        "dtype": "float32", "reps": 5, "time_s_median": 1e-4 * (1 + i % 7),
                        "time_s_p10": 9e-5, "time_s_p90": 2e-4, "status": "ok", "threads": 2,
                        "torch": "2.x", "transformers": "5.x", "cuda": "", "git_commit": "abc",
                    })
    df = pd.DataFrame(rows)
    for idx, status in (statuses or {}).items():
        df.loc[idx, "status"] = status
    return df


def test_join_keeps_every_ok_row_once_and_counts_skipped():
    measured = measured_frame({3: "oom", 4: "oom", 40: "error"})
    out = compute_metrics(measured, {"tiny": TINY}, CEILINGS, None)
    ok = measured[measured["status"] == "ok"]
    assert len(out) == len(ok) == len(measured) - 3
    assert out.attrs["skipped"] == 3 and out.attrs["skipped_by_status"] == {"error": 1, "oom": 2}
    assert not out.duplicated(KEY_COLUMNS).any()
    key = lambda df: sorted(map(tuple, df[KEY_COLUMNS].astype(str).to_numpy()))  # noqa: E731
    assert key(out) == key(ok)
    # input order kept, measured times carried unchanged, every metric column present
    assert out["time_s_median"].tolist() == ok["time_s_median"].tolist()
    assert out["op"].tolist() == ok["op"].tolist()
    assert set(METRIC_COLUMNS) <= set(out.columns) and (out["source"] == "measured").all()
    assert out["roof_spec_flops_per_s_moved"].isna().all()  # no datasheet entry


def test_microbench_rows_join_too(tmp_path):
    sweep = measured_frame().drop(columns="bench")
    micro = measured_frame().query("op in ['qk', 'softmax', 'pv']").drop(columns="bench").assign(layers=0)
    sweep.to_csv(tmp_path / "ar.csv", index=False)
    micro.to_csv(tmp_path / "micro.csv", index=False)
    measured = load_measured([(tmp_path / "ar.csv", "sweep"), (tmp_path / "micro.csv", "microbench")])
    out = compute_metrics(measured, {"tiny": TINY}, CEILINGS, None)
    assert len(out) == len(sweep) + len(micro)
    assert out["bench"].value_counts().to_dict() == {"sweep": len(sweep), "microbench": len(micro)}


def test_duplicates_unknown_model_and_unknown_op_are_errors():
    measured = measured_frame()
    with pytest.raises(ConfigError, match="share a key"):
        compute_metrics(pd.concat([measured, measured.iloc[[5]]]), {"tiny": TINY}, CEILINGS, None)
    with pytest.raises(ConfigError, match="no model dimensions for tiny"):
        compute_metrics(measured, {"other": TINY}, CEILINGS, None)
    bad = measured.iloc[[0]].assign(op="rmsnorm")
    with pytest.raises(ConfigError, match="rmsnorm"):
        compute_metrics(bad, {"tiny": TINY}, CEILINGS, None)


def one_row(**kw):
    row = {"model": "small", "device": "cpu", "device_name": "Test CPU", "mode": "medusa-3", "phase": "medusa",
           "op": "q_proj", "candidates": 3, "batch": 2, "kv_len": 7, "q_len": 3, "keys": 10, "layers": 3,
           "dtype": "float16", "time_s_median": 1e-3, "status": "ok"}
    row.update(kw)
    return pd.DataFrame([row])


def test_linear_row_by_hand():
    out = compute_metrics(one_row(), {"small": SMALL}, CEILINGS, SPEC).iloc[0]
    # q_proj: 2*b*n*in*out = 2*2*3*4*4 = 192 FLOPs; bytes 2*(4*4 + 2*3*4 + 2*3*4) = 128
    assert (out["flops"], out["bytes_counted"], out["bytes_moved"]) == (192, 128, 128)  # one GEMM: moved = counted
    assert out["oi_counted"] == out["oi_moved"] == 1.5
    assert out["achieved_flops_per_s"] == pytest.approx(192e3)
    assert out["achieved_bytes_per_s_counted"] == out["achieved_bytes_per_s_moved"] == pytest.approx(128e3)
    assert out["roof_measured_flops_per_s_moved"] == pytest.approx(1.5e5)  # min(1e6, 1e5 * 1.5)
    assert out["roof_spec_flops_per_s_moved"] == pytest.approx(1.5e6)  # min(1e7, 1e6 * 1.5)
    assert out["frac_of_measured_roof_moved"] == pytest.approx(1.28)
    assert out["frac_of_spec_roof_moved"] == pytest.approx(0.128)
    assert out["bound"] == "memory"
    assert out["sanity"] == "above_measured_roof"


def test_attention_row_uses_keys_actually_attended():
    out = compute_metrics(one_row(op="qk", time_s_median=1.0), {"small": SMALL}, CEILINGS, SPEC).iloc[0]
    # 2*b*H*n*s*d with s = keys = 10 (not kv_len = 7): 2*2*2*3*10*2 = 480
    assert out["flops"] == 480
    # bytes 2*(b*H*n*d + b*Hkv*s*d + b*H*n*s) = 2*(24 + 40 + 120) = 368
    assert out["bytes_counted"] == 368
    # moved: + a copy of Q for the grouped GEMM (b=2, GQA, n=3: 2*24 elements) + the mask added over the
    # tree's n-1 = 2 columns (scores read + written 2*b*H*n*2 = 48, the mask b*n*2 = 12 read): 368 + 2*(48+48+12)
    assert out["bytes_moved"] == 368 + 2 * (48 + 48 + 12) == 584
    assert out["oi_counted"] == pytest.approx(480 / 368) and out["oi_moved"] == pytest.approx(480 / 584)
    assert out["sanity"] == "ok" and out["roof_measured_flops_per_s_moved"] == pytest.approx(1e5 * 480 / 584)


def test_float32_row_uses_the_float32_measured_peak():
    fast_memory = dict(CEILINGS, bandwidth_bytes_per_s=1e7)  # ridges: 0.1 (float16), 0.05 (float32)
    out = compute_metrics(one_row(dtype="float32", time_s_median=1.0), {"small": SMALL}, fast_memory, None).iloc[0]
    assert out["oi_counted"] == 0.75  # 192 FLOPs / 256 bytes
    assert out["roof_measured_flops_per_s_moved"] == 5e5 and out["bound"] == "compute"
    half = compute_metrics(one_row(time_s_median=1.0), {"small": SMALL}, fast_memory, None).iloc[0]
    assert half["roof_measured_flops_per_s_moved"] == 1e6


def test_step_row_is_all_ops_times_layers_plus_heads():
    out = compute_metrics(one_row(op="step", time_s_median=1.0), {"small": SMALL}, CEILINGS, SPEC,
                          num_medusa_heads=2).iloc[0]
    e, b, n, s = 2, 2, 3, 10
    flops = byts = 0
    for op in LAYER:
        c = costmodel.op_cost(op, SMALL, b, n, s, e)
        flops, byts = flops + 3 * c.flops, byts + 3 * c.bytes
    lm = costmodel.op_cost("lm_head", SMALL, b, n, s, e)
    # 2 heads, each: 4x4 residual linear + 4x10 projection on b*n = 6 tokens
    h_flops = 2 * (2 * 6 * 4 * 4 + 2 * 6 * 4 * 10)
    h_bytes = 2 * e * ((16 + 6 * 4 + 6 * 4) + (40 + 6 * 4 + 6 * 10))
    assert medusa_heads_cost(SMALL, b, n, e, 2) == costmodel.Cost(h_flops, h_bytes)
    # the element-wise ops, per layer (b·n = 6 rows, h 4, I 8, H + H_kv = 3 heads of d 2):
    # 2 RMSNorms 2 x (96 FLOPs, 2·(48 + 4) B), rotary (3·36 FLOPs, 2·(72 + 24) B), KV write (0, 2·24 B),
    # 2 residual adds 2 x (24, 2·72), SiLU·up (5·48, 2·144) = 588 FLOPs, 1072 B; x 3 layers;
    # once: final norm (96, 104) and embedding (0, 2·48)
    extra = (3 * 588 + 96, 3 * 1072 + 104 + 96)
    assert (out["flops"], out["bytes_counted"]) == (flops + lm.flops + h_flops + extra[0],
                                                    byts + lm.bytes + h_bytes + extra[1])
    ar = compute_metrics(one_row(op="step", phase="ar", mode="ar", q_len=1, keys=8, candidates=1),
                         {"small": SMALL}, CEILINGS, SPEC, num_medusa_heads=2).iloc[0]
    assert ar["flops"] == step_cost(SMALL, 2, 1, 8, 2, 3, medusa=False, num_heads=0).flops  # no heads for ar


def test_device_mismatch_flag():
    out = compute_metrics(one_row(device_name="Other CPU", time_s_median=1.0), {"small": SMALL}, CEILINGS, None)
    assert out.iloc[0]["sanity"] == "device_mismatch"
    assert math.isnan(out.iloc[0]["frac_of_spec_roof_moved"])


def test_fractions_and_the_roof_check_use_the_moved_bytes():
    # the qk row above: 368 B counted, 584 B moved; the measured bandwidth is 1e5 B/s
    t = 584 / 1e5 / 1.1  # the moved bytes cross memory at 1.1x the roof's bandwidth, the counted ones at 0.69x
    out = compute_metrics(one_row(op="qk", time_s_median=t), {"small": SMALL}, CEILINGS, None).iloc[0]
    assert out["achieved_bytes_per_s_counted"] < 1e5 < out["achieved_bytes_per_s_moved"]
    assert out["frac_of_measured_roof_moved"] == pytest.approx(1.1)
    assert out["sanity"] == "above_measured_roof"


def test_fused_rows_moved_bytes_per_backend_and_kernel():
    rows = pd.concat([one_row(op="attn", attention_backend=be, kernel=k, time_s_median=1.0)
                      for be, k in (("sdpa", "EFFICIENT_ATTENTION"), ("flex", "flex_attention (torch.compile)"),
                                    ("sdpa", "MATH"), ("flex", "flex_attention (not compiled, compile off)"))],
                     ignore_index=True)
    rows["batch"] = [1, 2, 3, 4]  # distinct measurement keys
    out = compute_metrics(rows, {"small": SMALL}, CEILINGS, None)
    b, n, s, h, hkv, d, e = 1, 3, 10, 2, 1, 2, 2
    fused = e * (2 * b * h * n * d + 2 * b * hkv * s * d)
    assert out.loc[0, "bytes_counted"] == fused
    assert out.loc[0, "bytes_moved"] == fused + e * b * (h // hkv) * n * s  # + the mask repeated over the group
    assert out.loc[1, "bytes_moved"] == out.loc[1, "bytes_counted"]  # compiled flex: Q, K, V, O
    for i in (2, 3):  # SDPA's MATH path and uncompiled flex: traffic not modelled, no fraction claimed
        assert math.isnan(out.loc[i, "bytes_moved"]) and math.isnan(out.loc[i, "frac_of_measured_roof_moved"])
        assert out.loc[i, "bound"] == "" and out.loc[i, "sanity"] == "ok"


def test_launch_bound_near_the_floor_or_flat_while_bytes_grow():
    rows = []
    for i, (s, t) in enumerate([(100, 10e-6), (400, 11e-6), (1600, 40e-6), (6400, 160e-6)]):
        rows.append(one_row(op="qk", mode="ar", phase="ar", q_len=1, candidates=1, kv_len=s, keys=s + 1,
                            time_s_median=t))
    rows.append(one_row(op="q_proj", time_s_median=2.9e-6))
    ceilings = dict(CEILINGS, launch_floor={"floor_s": 2e-6})
    out = compute_metrics(pd.concat(rows, ignore_index=True), {"small": SMALL}, ceilings, None)
    assert out["launch_bound"].tolist() == [True, True, False, False, True]
    assert out.loc[0, "launch_reason"] == "time flat while bytes grow"
    assert out.loc[4, "launch_reason"] == "within 1.5x the launch floor" and out.loc[2, "launch_reason"] == ""
    no_floor = compute_metrics(pd.concat(rows, ignore_index=True), {"small": SMALL}, CEILINGS, None)
    assert not no_floor.loc[4, "launch_bound"]  # a ceilings file without a launch floor: flat-time only


def test_threads_mismatch_flag_on_cpu_rows():
    ceilings = dict(CEILINGS, device_type="cpu", threads=2)
    same = compute_metrics(one_row(threads=2, time_s_median=1.0), {"small": SMALL}, ceilings, None).iloc[0]
    other = compute_metrics(one_row(threads=1, time_s_median=1.0), {"small": SMALL}, ceilings, None).iloc[0]
    assert same["sanity"] == "ok" and other["sanity"] == "threads_mismatch"


def test_remainder_row_keeps_its_time_and_claims_no_counts():
    out = compute_metrics(one_row(op="remainder", scope="model", time_s_median=2e-3), {"small": SMALL}, CEILINGS,
                          SPEC).iloc[0]
    assert out["time_s_median"] == 2e-3 and out["bound"] == "uncounted" and out["sanity"] == "ok"
    for col in ("flops", "bytes_counted", "bytes_moved", "oi_counted", "oi_moved", "achieved_flops_per_s",
                "achieved_bytes_per_s_counted", "achieved_bytes_per_s_moved", "roof_spec_flops_per_s_moved",
                "roof_measured_flops_per_s_moved", "frac_of_spec_roof_moved", "frac_of_measured_roof_moved"):
        assert math.isnan(out[col]), col
    assert "remainder" in costmodel.UNCOUNTED_OPS and ("remainder", "model") in costmodel.measured_ops("ar")
    with pytest.raises(ValueError, match="no analytic cost"):
        costmodel.row_cost("remainder", "ar", SMALL, 1, 1, 8, 2, 3, 0)


def test_an_op_without_flops_has_a_fraction_of_the_bandwidth():
    """embedding: 6 rows of 4 gathered and written in float16 (96 B counted; moved adds the int64 ids, 48 B:
    144 B), no FLOPs; at 1e5 B/s the roof time is 1.44 ms, so 2.88 ms measured is half the roof (and no
    division by a zero FLOP/s roof)."""
    out = compute_metrics(one_row(op="embedding", time_s_median=2.88e-3), {"small": SMALL}, CEILINGS, SPEC).iloc[0]
    assert (out["flops"], out["bytes_counted"], out["bytes_moved"], out["oi_moved"]) == (0, 96, 144, 0)
    assert out["frac_of_measured_roof_moved"] == pytest.approx(0.5) and out["roof_measured_flops_per_s_moved"] == 0
    assert out["frac_of_spec_roof_moved"] == pytest.approx(144 / 1e6 / 2.88e-3) and out["sanity"] == "ok"


def test_a_rows_own_launch_floor_wins_over_the_ceilings_one():
    rows = pd.concat([one_row(op="q_proj", batch=1, time_s_median=5e-6, launch_floor_s=4e-6),
                      one_row(op="q_proj", batch=2, time_s_median=5e-6, launch_floor_s=float("nan"))],
                     ignore_index=True)
    out = compute_metrics(rows, {"small": SMALL}, dict(CEILINGS, launch_floor={"floor_s": 1e-6}), None)
    assert out["launch_bound"].tolist() == [True, False]  # 5 <= 1.5 x 4 (its own floor); 5 > 1.5 x 1 (device's)
