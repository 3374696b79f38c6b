"""Sampling primitives: heavy-tailed draws and hashes that need no table of the id space.

Everything here is vectorised numpy and deterministic for a seed. The hashes (``mix64``, ``unit``,
``hash_normal``) turn an id into per-id randomness without storing per-id arrays, which is what
lets the release generator stream 233M lines with constant memory.
"""
from __future__ import annotations

import math

import numpy as np


def zipf_ranks(rng: np.random.Generator, n: int, m: int, s: float, q_share: float) -> np.ndarray:
    """``n`` draws of ranks 0..m-1 with P(rank k) ~ (k+1+q)^-s, q = q_share*m, by inverting the CDF.

    The continuous CDF needs no table of m weights, so the id space can be huge at no memory cost.
    """
    return zipf_from_uniform(rng.random(n), m, s, q_share)


def zipf_from_uniform(u: np.ndarray, m: int, s: float, q_share: float) -> np.ndarray:
    """The rank of each uniform ``u`` under the Zipf-Mandelbrot law of :func:`zipf_ranks`."""
    q = q_share * m
    if abs(s - 1.0) < 1e-9:
        x = (1 + q) * np.exp(u * math.log((m + 1 + q) / (1 + q))) - q
    else:
        a, b = (1 + q) ** (1 - s), (m + 1 + q) ** (1 - s)
        x = (a + u * (b - a)) ** (1 / (1 - s)) - q
    return np.clip(x.astype(np.int64) - 1, 0, m - 1)


def _coprime_multiplier(m: int, start: int) -> int:
    a = start % m or 1
    while math.gcd(a, m) != 1:
        a += 1
    return a


def scramble(ranks: np.ndarray, m: int, salt: int) -> np.ndarray:
    """A bijection of 0..m-1 so that popular ids are spread out instead of being 0, 1, 2..."""
    a = _coprime_multiplier(m, 2_654_435_761 + salt)
    return ((ranks.astype(np.uint64) * np.uint64(a) + np.uint64(salt % m)) % np.uint64(m)).astype(np.int64)


def mix64(x: np.ndarray, salt: int) -> np.ndarray:
    """A bijective 64-bit hash: distinct ids give distinct codes, and codes look random."""
    z = x.astype(np.uint64) + np.uint64(salt)
    z *= np.uint64(0x9E3779B97F4A7C15)
    z ^= z >> np.uint64(29)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(32)
    return z



def unit(x: np.ndarray, salt: int) -> np.ndarray:
    """A uniform in [0, 1) per id, the same every time for the same (id, salt)."""
    return (mix64(x, salt) >> np.uint64(11)).astype(np.float64) * (1.0 / 2 ** 53)


def hash_normal(x: np.ndarray, salt: int, dims: int) -> np.ndarray:
    """(len(x), dims) standard normals per id, from hashes (Box-Muller): per-id traits without a table."""
    out = np.empty((len(x), dims), np.float32)
    for d in range(0, dims, 2):
        u1 = 1.0 - unit(x, salt + 1000 * d + 1)  # (0, 1]: log is finite
        u2 = unit(x, salt + 1000 * d + 2)
        r = np.sqrt(-2.0 * np.log(u1))
        out[:, d] = r * np.cos(2 * np.pi * u2)
        if d + 1 < dims:
            out[:, d + 1] = r * np.sin(2 * np.pi * u2)
    return out


def split_counts(total: int, weights: np.ndarray | list[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder; exact sum)."""
    w = np.asarray(weights, dtype=np.float64)
    if total == 0 or w.sum() == 0:
        return [0] * len(w)
    raw = w / w.sum() * total
    out = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - out), kind="stable")[: total - int(out.sum())]:
        out[i] += 1
    return out.tolist()




def make_lines_distinct(users: np.ndarray, items: np.ndarray, ts: np.ndarray, n_items: int, step: int) -> None:
    """Rows of the same pair get different times (``step`` apart), so only planned duplicates are equal lines."""
    keys = users.astype(np.int64) * n_items + items
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    repeated = np.zeros(len(keys), bool)
    repeated[1:] = sk[1:] == sk[:-1]
    repeated[:-1] |= repeated[1:]
    rows = order[repeated]  # every row whose pair occurs more than once
    del order, sk
    for _ in range(1000):
        sub = np.lexsort((ts[rows], keys[rows]))
        r = rows[sub]
        same = (keys[r][1:] == keys[r][:-1]) & (ts[r][1:] == ts[r][:-1])
        if not same.any():
            return
        ts[r[1:][same]] += step
    raise RuntimeError("could not give repeated pairs distinct times")
