"""Medusa decoding: trees from an acceptance table, their tensors, heads, and the lossless decoding step."""
