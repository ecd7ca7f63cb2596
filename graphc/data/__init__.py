"""Bundled data sets (see README.md in this folder for sources and licences)."""
from __future__ import annotations

import gzip
from importlib import resources

import numpy as np


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits: images (1797, 8, 8) float32 scaled to [0, 1], labels (1797,) int32."""
    raw = resources.files(__name__).joinpath("digits.csv.gz").read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",", dtype=np.int64)
    images = (table[:, :64] / 16.0).astype(np.float32).reshape(-1, 8, 8)
    return images, table[:, 64].astype(np.int32)
