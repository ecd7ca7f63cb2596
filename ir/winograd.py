"""Winograd minimal-filtering transforms F(m, r), derived by the Cook-Toom construction.

A 1-D correlation of an alpha = m + r - 1 sample input tile d with an r-tap filter g,
``y[i] = sum_k d[i + k] g[k]`` for i < m, costs m*r multiplications directly; Winograd's
algorithm computes it with alpha:

    y = A^T [(G g) * (B^T d)]        (2-D: Y = A^T [(G g G^T) * (B^T d B)] A)

Derivation. Linear convolution of a length-m sequence a with g, c = a (*) g, is a product of
polynomials of degree m-1 and r-1; the product has degree alpha-1 and is fixed by its values
at alpha points: alpha-1 finite interpolation points p_j plus "infinity" (the leading
coefficient). With Vandermonde evaluation matrices V_n (alpha x n; row j = [1, p_j, ...,
p_j^(n-1)], the infinity row = [0, ..., 0, 1]):

    c = V_alpha^-1 [(V_r g) * (V_m a)] = T_g a.

Correlation is the transpose of convolution in a: y = T_g^T d = V_m^T diag(V_r g) V_alpha^-T d,
so A^T = V_m^T, G = V_r, B^T = V_alpha^-T. Any diagonal scaling D may move between G and
B^T (G -> D G, B^T -> D^-1 B^T); we scale each row of B^T to coprime integers so the input
transform (run on every call) is adds and small integer multiplies, and the fractions go
into G (folded at compile time for constant weights). Everything is computed exactly with
fractions, and `check` compares the float64 result with direct correlation.

Points: F(2,3) uses 0, 1, -1; F(4,3) adds 2, -2; F(6,3) adds 1/2, -1/2. Larger tiles need
points of growing magnitude, so the transforms' coefficients (and the rounding error in
float32) grow quickly with m; see passes/winograd.py for the measured errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import gcd, lcm

import numpy as np

# Interpolation points per output tile size m (for r = 3), smallest magnitudes first.
POINTS: dict[int, tuple[Fraction, ...]] = {
    2: (Fraction(0), Fraction(1), Fraction(-1)),
    4: (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2)),
    6: (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2),
        Fraction(-1, 2)),
}

Matrix = tuple[tuple[Fraction, ...], ...]


@dataclass(frozen=True)
class Transform:
    """The matrices of F(m, r): AT (m x alpha), G (alpha x r), BT (alpha x alpha), exact."""
    m: int
    r: int
    AT: Matrix
    G: Matrix
    BT: Matrix

    @property
    def alpha(self) -> int:
        return self.m + self.r - 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(AT, G, BT) as float64 arrays."""
        return tuple(np.array([[float(v) for v in row] for row in mat]) for mat in
                     (self.AT, self.G, self.BT))  # type: ignore[return-value]


def _vandermonde(points: tuple[Fraction, ...], n: int) -> list[list[Fraction]]:
    rows = [[p ** k for k in range(n)] for p in points]
    rows.append([Fraction(0)] * (n - 1) + [Fraction(1)])  # the point at infinity
    return rows


def _inverse(a: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact Gauss-Jordan inverse (the Vandermonde matrix of distinct points is regular)."""
    n = len(a)
    aug = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        p = aug[col][col]
        aug[col] = [v / p for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [v - f * w for v, w in zip(aug[r], aug[col])]
    return [row[n:] for row in aug]


def _transpose(a: list[list[Fraction]]) -> list[list[Fraction]]:
    return [list(col) for col in zip(*a)]


def _integer_scale(row: list[Fraction]) -> Fraction:
    """The factor that makes a row coprime integers with a positive first nonzero entry."""
    den = lcm(*(v.denominator for v in row))
    nums = [int(v * den) for v in row]
    g = gcd(*nums) or 1
    first = next((v for v in nums if v), 1)
    return Fraction(den, g) * (1 if first > 0 else -1)


@lru_cache(maxsize=None)
def transform(m: int, r: int = 3) -> Transform:
    """F(m, r) for a tile size with known interpolation points (m in POINTS, r = 3)."""
    if r != 3 or m not in POINTS:
        raise ValueError(f"no interpolation points for F({m}, {r}); known: "
                         f"{', '.join(f'F({k}, 3)' for k in POINTS)}")
    pts = POINTS[m]
    alpha = m + r - 1
    assert len(pts) == alpha - 1
    AT = _transpose(_vandermonde(pts, m))
    G = _vandermonde(pts, r)
    BT = _transpose(_inverse(_vandermonde(pts, alpha)))
    for j, row in enumerate(BT):
        s = _integer_scale(row)
        BT[j] = [v * s for v in row]
        G[j] = [v / s for v in G[j]]
    freeze = lambda mat: tuple(tuple(row) for row in mat)  # noqa: E731
    return Transform(m, r, freeze(AT), freeze(G), freeze(BT))


def correlate_tile(t: Transform, d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The 2-D Winograd formula on one alpha x alpha tile and an r x r filter (float64)."""
    AT, G, BT = t.arrays()
    return AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T


def check(t: Transform, seed: int = 0) -> float:
    """Max abs difference between the Winograd formula and direct correlation on random
    float64 data (a few ulps of the data's scale when the derivation is right)."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((t.alpha, t.alpha))
    g = rng.standard_normal((t.r, t.r))
    direct = np.array([[np.sum(d[i:i + t.r, j:j + t.r] * g) for j in range(t.m)]
                       for i in range(t.m)])
    return float(np.max(np.abs(correlate_tile(t, d, g) - direct)))
