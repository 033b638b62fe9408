#!/usr/bin/env python
"""What one timed module call costs the sweep's per-op pass: forward hooks against a ``forward`` wrapper.

The per-op pass times every Linear, RMSNorm and the embedding. How it attaches its timer decides
how much slower the instrumented step is than the plain one (``benchmarks/step_closure.py``):
``register_forward_pre_hook`` + ``register_forward_hook`` send every call down ``nn.Module``'s
slow path; :class:`medusa_roofline.measure.instrument.timed_forwards` wraps ``forward`` instead.
Times a 1x1 ``nn.Linear`` plain, through the wrapper and through hooks (both recording into an
active :class:`~medusa_roofline.measure.op_timer.OpTimer`), ``--rounds`` rounds of ``--calls``
calls each, and prints the median per-call time and each method's excess over the plain call.

    python benchmarks/wrapper_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from medusa_roofline.measure.instrument import timed_linears  # noqa: E402
from medusa_roofline.measure.op_timer import OpTimer, activate, active_timer  # noqa: E402


def per_call_us(call, timer: OpTimer, calls: int, rounds: int) -> float:
    """Median over rounds of the mean seconds per call, in µs; each round is one timer repetition."""
    samples = []
    for _ in range(rounds):
        timer.begin_rep()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - start) / calls * 1e6)
        timer.end_rep()
    return statistics.median(samples)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain, wrapped, hooked = measure(args.calls, args.rounds)
    finally:
        torch.set_num_threads(threads)
    print(f"1x1 nn.Linear, median of {args.rounds} x {args.calls} calls, 1 thread, torch {torch.__version__}")
    print(f"plain call      {plain:6.2f} us")
    print(f"forward wrapper {wrapped:6.2f} us  (+{wrapped - plain:.2f} us)")
    print(f"forward hooks   {hooked:6.2f} us  (+{hooked - plain:.2f} us)")
    return 0


def measure(calls: int, rounds: int) -> tuple[float, float, float]:
    """(plain, wrapped, hooked) µs per call of a 1x1 Linear."""
    model = nn.ModuleDict({"probe": nn.Linear(1, 1, bias=False)})
    probe, x = model["probe"], torch.zeros(1, 1)
    call = lambda: probe(x)  # noqa: E731
    timer = OpTimer("cpu")

    def pre(module, inputs):
        active_timer().start("probe")

    def post(module, inputs, output):
        active_timer().stop("probe")

    with torch.inference_mode():
        plain = per_call_us(call, timer, calls, rounds)
        with timed_linears(model, ops=("probe",)), activate(timer):
            wrapped = per_call_us(call, timer, calls, rounds)
        handles = [probe.register_forward_pre_hook(pre), probe.register_forward_hook(post)]
        with activate(timer):
            hooked = per_call_us(call, timer, calls, rounds)
        for handle in handles:
            handle.remove()
    return plain, wrapped, hooked


if __name__ == "__main__":
    sys.exit(main())
