"""What the oracle needs besides the tolerance rule.

A result is judged against the truth with ir/tolerance.py's rule. Before a disagreement is
reported, the truth is re-run with every computed value moved by the rounding its node may
add (ir/tolerance.py: rounding_noise_runs): elements whose truth then moves beyond the
tolerance hang on a choice a rounding difference can legitimately flip (max-pool routing
between near-equal values, relu or a comparison at a value that cancels to near 0, the
sign of a sum near 0, rsqrt or a division of such a value) and are counted unstable, not
wrong. Inputs, parameters and constants are not moved: every path sees the same bits, so
a discrete choice on them (a tie between two equal inputs) must be made the same way.
"""
from __future__ import annotations

import numpy as np


def as_list(result) -> list[np.ndarray]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


__all__ = ["as_list"]
