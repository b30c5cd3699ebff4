"""The data mixing law L(r) = c + k·exp(Σ_j t_j r_j) (Ye et al., arXiv 2403.16952, METHODS §9c).

One law per validation domain; a mean over domains is the mean of the per-domain laws (the
paper's L = Σ_i s_i L_i with equal weights s_i). Fitted by Huber-loss least squares (δ = 0.01, as
in the paper's code) from several starting points; the start whose fit has the lowest loss on a
held-out fifth of the mixtures is refitted on all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HUBER_DELTA = 0.01  # Ye et al. law.py: Huber loss, delta 0.01
# Starting floors c0 as fractions of the lowest observed loss: each gives a linear start for
# (log k, t) by regressing log(L - c0) on the proportions.
START_FLOORS = (0.0, 0.5, 0.8, 0.9, 0.95)


@dataclass
class MixingLaw:
    """Parameters of one law: floor c, log k and one exponent t_j per training domain."""

    c: float
    log_k: float
    t: list[float]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.c + np.exp(np.clip(self.log_k + x @ np.asarray(self.t), -50.0, 50.0))

    def to_json(self) -> dict:
        return {"c": self.c, "log_k": self.log_k, "t": list(self.t)}

    @classmethod
    def from_json(cls, d: dict) -> MixingLaw:
        return cls(c=float(d["c"]), log_k=float(d["log_k"]), t=[float(v) for v in d["t"]])


def _start(x: np.ndarray, y: np.ndarray, fraction: float) -> np.ndarray:
    # floor below every loss: fraction·min(y) for positive losses, still below min(y) otherwise
    floor = y.min() - (1.0 - fraction) * max(abs(y.min()), 1e-3)
    design = np.hstack([np.ones((len(x), 1)), x])
    coef = np.linalg.lstsq(design, np.log(y - floor), rcond=None)[0]
    return np.concatenate([[floor], coef])


def _refine(x: np.ndarray, y: np.ndarray, p0: np.ndarray, delta: float) -> np.ndarray:
    from scipy.optimize import least_squares

    def residuals(p: np.ndarray) -> np.ndarray:
        return p[0] + np.exp(np.clip(p[1] + x @ p[2:], -50.0, 50.0)) - y

    def jacobian(p: np.ndarray) -> np.ndarray:
        e = np.exp(np.clip(p[1] + x @ p[2:], -50.0, 50.0))
        return np.hstack([np.ones((len(x), 1)), e[:, None], e[:, None] * x])

    fit = least_squares(residuals, p0, jac=jacobian, loss="huber", f_scale=delta, max_nfev=500)
    return fit.x


def _huber(residual: np.ndarray, delta: float) -> float:
    a = np.abs(residual)
    return float(np.mean(np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))))


def fit_mixing_law(x: np.ndarray, y: np.ndarray, delta: float = HUBER_DELTA, seed: int = 42) -> MixingLaw:
    """Fit c + k·exp(x·t) to losses y (rows of x are mixture proportions)."""
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # the matrices are tiny: threaded BLAS only adds overhead (10x slower on a busy 2-core machine)
    with threadpool_limits(1):
        return _fit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), delta, seed)


def _fit(x: np.ndarray, y: np.ndarray, delta: float, seed: int) -> MixingLaw:
    if len(y) < x.shape[1] + 3:
        raise ValueError(f"the mixing law needs at least {x.shape[1] + 3} mixtures, got {len(y)}")
    order = np.random.default_rng(seed).permutation(len(y))
    held, used = order[: len(y) // 5], order[len(y) // 5 :]
    best, best_loss = None, np.inf
    for fraction in START_FLOORS:
        p = _refine(x[used], y[used], _start(x[used], y[used], fraction), delta)
        loss = _huber(p[0] + np.exp(np.clip(p[1] + x[held] @ p[2:], -50, 50)) - y[held], delta)
        if loss < best_loss:
            best, best_loss = fraction, loss
    p = _refine(x, y, _start(x, y, best), delta)
    return MixingLaw(c=float(p[0]), log_k=float(p[1]), t=[float(v) for v in p[2:]])
