"""Measurement on the device at hand: timers, attention backends, instrumentation, sweep, micro-benchmark,
measured ceilings and resumable checkpoints."""
