"""Results: metrics (measured rows against the cost model and the roofs), speedup, and every figure."""
