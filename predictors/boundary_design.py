"""Which models to evaluate under a cost budget: the balanced I-optimal design.

Before any model is scored, pick a subset S of candidates (known compute z_i, cost c_i ∝ parameter
count) with Σ c_i ≤ U that pins the capability boundary down best (arXiv 2602.15327, budgeted
frontier recovery; METHODS.md §8.4):

    Φ_λ(S) = −mean_k g(z_k)ᵀ M(S)⁻¹ g(z_k) + λ·Σ_bins log(n_b(S) + ε)

M(S) = Σ_{i∈S} w_i g(z_i) g(z_i)ᵀ is the Fisher information of the 4-parameter sigmoid at a
pilot θ0, g its gradient in (y0, L, a, b), z_k the midpoints of equal-mass compute bins and n_b(S)
the number of chosen models per bin. Greedy: seed with z_min, z_max and z* ± c/b, then add the
model with the largest gain per unit cost until the budget is spent. Selection uses (z, cost) only.

Reading of the pilot. The authors' defaults are y0 = 0.20, L = 0.75, a = −9, b = 1 in the form
y0 + L·σ(a + b·z), with z = log10(FLOPs / 1e21) as in their design code (compute in ZFLOPs).
Read literally the inflection z* = −a/b = 9 sits at 1e30 FLOPs, above every model in public tables
(largest ~4e25), which makes the pilot flat over the pool; `Pilot.centred` keeps y0, L and b and
puts the inflection at the pool's median compute instead. Both readings are measured in
`bench/predictors_boundary.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assay.predictors.boundary_fit import expit

ZFLOPS = 21.0  # the pilot's z is log10(FLOPs / 1e21)
SEED_C = 1.543  # seed offset z* ± c/b: default of the authors' design CLI (arXiv 2602.15327 code)
BALANCE_EPS = 1e-6
RIDGE = 1e-9  # M(∅) = ridge·I so that M⁻¹ exists before four points are chosen


@dataclass(frozen=True)
class Pilot:
    """Pilot frontier θ0 = (y0, L, a, b) for y0 + L·σ(a + b·z), z = log10(FLOPs / 1e21)."""

    y0: float = 0.20  # pilot defaults of arXiv 2602.15327's design CLI
    L: float = 0.75
    a: float = -9.0
    b: float = 1.0

    @classmethod
    def centred(cls, z: np.ndarray, y0: float = 0.20, L: float = 0.75, b: float = 1.0) -> Pilot:
        """The default pilot with its inflection moved to the median of `z` (ZFLOPs units)."""
        return cls(y0=y0, L=L, a=-b * float(np.median(z)), b=b)

    @property
    def z_star(self) -> float:
        return -self.a / self.b

    def curve(self, z: np.ndarray) -> np.ndarray:
        return self.y0 + self.L * expit(self.a + self.b * np.asarray(z, dtype=float))

    def gradients(self, z: np.ndarray) -> np.ndarray:
        """∂q/∂(y0, L, a, b) at each z: shape (len(z), 4)."""
        z = np.asarray(z, dtype=float)
        s = expit(self.a + self.b * z)
        ds = self.L * s * (1.0 - s)
        return np.column_stack([np.ones_like(z), s, ds, ds * z])


def equal_mass_bins(z: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(bin index per point, bin midpoints) for equal-count bins of z."""
    z = np.asarray(z, dtype=float)
    n_bins = max(1, min(n_bins, len(np.unique(z))))
    edges = np.unique(np.quantile(z, np.linspace(0.0, 1.0, n_bins + 1)))
    index = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(edges) - 2)
    return index, 0.5 * (edges[:-1] + edges[1:])


def balanced_i_optimal(
    flops: np.ndarray,
    cost: np.ndarray,
    budget: float,
    *,
    pilot: Pilot | None = None,
    balance_lambda: float = 0.1,
    n_bins: int = 10,
    binomial_items: int | None = None,
    seed_c: float = SEED_C,
) -> np.ndarray:
    """Indices of the models to evaluate, in the order chosen, with total cost ≤ `budget`.

    `pilot` defaults to `Pilot.centred` on the pool. `binomial_items` = m weighs each model by
    m / (p(1 − p)) at the pilot's p (binomial score noise); None weighs all models equally.
    """
    z = np.log10(np.asarray(flops, dtype=float)) - ZFLOPS
    cost = np.asarray(cost, dtype=float)
    if np.any(cost <= 0):
        raise ValueError("every candidate needs a positive evaluation cost")
    pilot = pilot or Pilot.centred(z)
    grads = pilot.gradients(z)  # (n, 4)
    if binomial_items:
        p = np.clip(pilot.curve(z), 1e-6, 1 - 1e-6)
        weight = binomial_items / (p * (1.0 - p))
    else:
        weight = np.ones_like(z)
    bin_of, mids = equal_mass_bins(z, n_bins)
    g_mid = pilot.gradients(mids)
    a_matrix = g_mid.T @ g_mid / len(mids)  # mean over bin midpoints of g gᵀ
    u = grads * np.sqrt(weight)[:, None]

    m_inv = np.eye(4) / RIDGE
    counts = np.zeros(len(mids))
    chosen: list[int] = []
    used = np.zeros(len(z), dtype=bool)
    spent = 0.0

    def take(i: int) -> None:
        nonlocal m_inv, spent
        v = m_inv @ u[i]
        m_inv = m_inv - np.outer(v, v) / (1.0 + u[i] @ v)  # Sherman–Morrison
        used[i] = True
        counts[bin_of[i]] += 1
        spent += cost[i]
        chosen.append(i)

    for target in (z.min(), z.max(), pilot.z_star - seed_c / pilot.b, pilot.z_star + seed_c / pilot.b):
        for i in np.argsort(np.abs(z - target), kind="stable"):
            if not used[i] and spent + cost[i] <= budget:
                take(int(i))
                break

    while True:
        fits = ~used & (spent + cost <= budget)
        if not fits.any():
            break
        v = u @ m_inv  # rows: M⁻¹ u_i (M⁻¹ is symmetric)
        denom = 1.0 + np.einsum("ij,ij->i", u, v)
        info_gain = np.einsum("ij,jk,ik->i", v, a_matrix, v) / denom  # drop in mean predictive variance
        n_b = counts[bin_of]
        balance_gain = balance_lambda * (np.log(n_b + 1.0 + BALANCE_EPS) - np.log(n_b + BALANCE_EPS))
        score = np.where(fits, (info_gain + balance_gain) / cost, -np.inf)
        best = int(np.argmax(score))
        if score[best] <= 0:
            break
        take(best)
    return np.array(chosen, dtype=int)


def mean_predictive_variance(
    flops: np.ndarray, chosen: np.ndarray, pilot: Pilot | None = None, n_bins: int = 10
) -> float:
    """−Φ_info: the pilot's mean predictive variance at the pool's bin midpoints given `chosen` (unit weights)."""
    z = np.log10(np.asarray(flops, dtype=float)) - ZFLOPS
    pilot = pilot or Pilot.centred(z)
    _, mids = equal_mass_bins(z, n_bins)
    g_mid, g = pilot.gradients(mids), pilot.gradients(z[np.asarray(chosen, dtype=int)])
    m = g.T @ g + RIDGE * np.eye(4)
    return float(np.mean(np.einsum("ij,ij->i", g_mid @ np.linalg.inv(m), g_mid)))


def random_design(cost: np.ndarray, budget: float, rng: np.random.Generator) -> np.ndarray:
    """A random subset within the budget: candidates in random order, each taken if it still fits."""
    chosen, spent = [], 0.0
    for i in rng.permutation(len(cost)):
        if spent + cost[i] <= budget:
            chosen.append(int(i))
            spent += cost[i]
    return np.array(chosen, dtype=int)


def frontier_error(q_subset: np.ndarray, q_full: np.ndarray) -> float:
    """Mean |difference| of two boundaries evaluated on the same z grid (score units)."""
    return float(np.mean(np.abs(np.asarray(q_subset) - np.asarray(q_full))))
