"""The analytic roofline: the cost model (every op's FLOPs and bytes), hardware roofs, analytic tables."""
