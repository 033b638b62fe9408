"""Reproducibility: the config resolved once at the edge, and run archives that regenerate every figure."""
