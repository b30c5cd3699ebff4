"""The two fitted functions of the task ladder (Bhagia et al. 2024, arXiv 2412.04403) and their errors.

Step 1: task loss from size and data, L(N, D) = A/N^alpha + B/D^beta + E, fitted with a Huber loss
on log values. Step 2: accuracy from task loss, Acc(L) = a / (1 + exp(-k (L - L0))) + b.
Both return parameters and a covariance so that a chained prediction carries a delta-method interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Step 1 (Bhagia et al. 2024 §3.1; code `get_coefficients_huber`): p = (ln A, ln B, alpha, beta, E).
STEP1_P0 = (3.0, 6.0, 0.1, 0.2, 1.0)
HUBER_DELTA = 1e-3


@dataclass
class LossLaw:
    """L(N, D) = exp(a)/N^alpha + exp(b)/D^beta + E, with the covariance of (a, b, alpha, beta, E)."""

    params: np.ndarray
    cov: np.ndarray

    def __call__(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        return loss_law(self.params, np.asarray(n, float), np.asarray(d, float))

    def log_std(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Delta-method standard error of ln L at (n, d)."""
        g = loss_law_log_grad(
            self.params, np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
        )
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", g, self.cov, g), 0.0))


def loss_law(p: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    a, b, alpha, beta, e = p
    return np.exp(a - alpha * np.log(n)) + np.exp(b - beta * np.log(d)) + e


def loss_law_log_grad(p: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """d ln L / dp, one row per point."""
    a, b, alpha, beta, _ = p
    tn = np.exp(a - alpha * np.log(n))
    td = np.exp(b - beta * np.log(d))
    lhat = tn + td + p[4]
    g = np.stack([tn, td, -tn * np.log(n), -td * np.log(d), np.ones_like(tn)], axis=1)
    return g / lhat[:, None]


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    grad = np.where(small, r, delta * np.sign(r))
    return value, grad


def fit_loss_law(
    n: np.ndarray,
    d: np.ndarray,
    loss: np.ndarray,
    p0: tuple[float, ...] = STEP1_P0,
    delta: float = HUBER_DELTA,
) -> LossLaw:
    """Huber(delta) on ln L-hat - ln L, L-BFGS-B with an analytic gradient, every parameter >= 0."""
    from scipy.optimize import minimize

    n, d, loss = (np.asarray(v, dtype=float) for v in (n, d, loss))
    if len(loss) < 5:
        raise ValueError(f"step 1 needs at least 5 runs (one per size and token count), got {len(loss)}")
    log_loss = np.log(loss)

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        lhat = loss_law(p, n, d)
        r = np.log(lhat) - log_loss
        value, dr = _huber(r, delta)
        return float(value.sum()), dr @ loss_law_log_grad(p, n, d)

    # The reference settings (ftol 0, gtol 1e-10, maxiter 1e6) run until the gradient vanishes.
    res = minimize(
        objective,
        np.asarray(p0, dtype=float),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * 5,
        options={"ftol": 0.0, "gtol": 1e-10, "maxiter": 100_000},
    )
    p = res.x
    return LossLaw(
        params=p, cov=_gauss_newton_cov(np.log(loss_law(p, n, d)) - log_loss, loss_law_log_grad(p, n, d))
    )


def fit_loss_laws_shared(
    points: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], delta: float = HUBER_DELTA
) -> dict[str, LossLaw]:
    """Step 1 for several tasks at once: each task its own A, B, E; one alpha and beta for all.

    The objective is the same Huber(delta) on log values, summed over tasks. Why shared exponents:
    per-task fits on ~20 runs give exponents that scatter (alpha 0.3-0.7, beta 0.08-0.44 on the
    OLMo ladder) and extrapolate that scatter; how fast loss falls with N and D is a property of the
    models and data, which all tasks share. `points` maps task -> (n, d, loss).
    Optimiser: a grid over (alpha, beta) with each task's (A, B, E) from non-negative least squares
    on relative errors, then trust-region least squares with the Huber loss (bounds >= 0, as in the
    reference) from the best grid point; it converges in well under a second.
    """
    from scipy.optimize import least_squares, nnls

    tasks = list(points)
    k = len(tasks)
    for t in tasks:
        if len(points[t][2]) < 4:
            raise ValueError(f"step 1 for {t!r} needs at least 4 runs, got {len(points[t][2])}")
    ti = np.concatenate([np.full(len(points[t][0]), i) for i, t in enumerate(tasks)])
    ln_n = np.log(np.concatenate([np.asarray(points[t][0], float) for t in tasks]))
    ln_d = np.log(np.concatenate([np.asarray(points[t][1], float) for t in tasks]))
    y = np.concatenate([np.asarray(points[t][2], float) for t in tasks])
    rows = np.arange(len(y))

    def terms(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(over="ignore"):  # far grid corners overflow to inf and simply lose
            tn = np.exp(p[2 + ti] - p[0] * ln_n)
            td = np.exp(p[2 + k + ti] - p[1] * ln_d)
        return tn, td, tn + td + p[2 + 2 * k + ti]

    def resid(p: np.ndarray) -> np.ndarray:
        return np.log(terms(p)[2]) - np.log(y)

    def jac(p: np.ndarray) -> np.ndarray:
        tn, td, lhat = terms(p)
        j = np.zeros((len(y), len(p)))
        j[:, 0], j[:, 1] = -tn * ln_n / lhat, -td * ln_d / lhat
        j[rows, 2 + ti], j[rows, 2 + k + ti], j[rows, 2 + 2 * k + ti] = tn / lhat, td / lhat, 1 / lhat
        return j

    best_value, best_p = np.inf, None
    grid = np.arange(0.05, 1.0001, 0.05)
    for alpha in grid:
        for beta in grid:
            x, z = np.exp(-alpha * ln_n), np.exp(-beta * ln_d)
            coef = np.zeros((k, 3))
            for i in range(k):
                m = ti == i
                design = np.stack([x[m], z[m], np.ones(m.sum())], axis=1) / y[m, None]
                coef[i], _ = nnls(design, np.ones(m.sum()))
            with np.errstate(divide="ignore"):
                logs = np.maximum(np.log(coef[:, :2]), 0.0)  # ln A, ln B >= 0 as in the reference bounds
            p = np.concatenate([[alpha, beta], logs[:, 0], logs[:, 1], coef[:, 2]])
            value = float(_huber(resid(p), delta)[0].sum())
            if value < best_value:
                best_value, best_p = value, p
    res = least_squares(
        resid, best_p, jac=jac, bounds=(0.0, np.inf), loss="huber", f_scale=delta,
        x_scale="jac", ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=5000,
    )  # fmt: skip
    p = res.x
    cov = _gauss_newton_cov(resid(p), jac(p))
    out = {}
    for i, t in enumerate(tasks):
        idx = [2 + i, 2 + k + i, 0, 1, 2 + 2 * k + i]  # this task's (ln A, ln B, alpha, beta, E)
        out[t] = LossLaw(params=p[idx], cov=cov[np.ix_(idx, idx)])
    return out


def _gauss_newton_cov(residuals: np.ndarray, jac: np.ndarray) -> np.ndarray:
    """s^2 (J^T J)^-1 with s^2 the residual variance; a pseudo-inverse keeps flat directions finite."""
    dof = max(len(residuals) - jac.shape[1], 1)
    s2 = float(residuals @ residuals) / dof
    return s2 * np.linalg.pinv(jac.T @ jac)


# ------------------------------------------------------------------- step 2


@dataclass
class AccuracyCurve:
    """Acc(L) = a / (1 + exp(-k (L - L0))) + b with a < 0, with the covariance of (a, L0, k, b)."""

    params: np.ndarray
    cov: np.ndarray
    resid_std: float

    def __call__(self, loss: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(loss, float), *self.params)

    def slope(self, loss: np.ndarray) -> np.ndarray:
        a, x0, k, _ = self.params
        s = 1.0 / (1.0 + np.exp(-k * (np.asarray(loss, float) - x0)))
        return a * k * s * (1 - s)

    def std(self, loss: np.ndarray) -> np.ndarray:
        """Delta-method standard error of the curve at `loss` (parameter uncertainty only)."""
        g = sigmoid_grad(np.atleast_1d(np.asarray(loss, float)), self.params)
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", g, self.cov, g), 0.0))


def sigmoid(x: np.ndarray, a: float, x0: float, k: float, b: float) -> np.ndarray:
    return a / (1.0 + np.exp(-k * (x - x0))) + b


def sigmoid_grad(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    a, x0, k, _ = p
    s = 1.0 / (1.0 + np.exp(-k * (x - x0)))
    ds = s * (1 - s)
    return np.stack([s, -a * k * ds, a * (x - x0) * ds, np.ones_like(s)], axis=1)


def fit_accuracy_curve(
    loss: np.ndarray,
    acc: np.ndarray,
    chance: float,
    max_acc: float = 1.0,
    weights: np.ndarray | None = None,
) -> AccuracyCurve:
    """Bounded least squares (trust-region reflective) from p0 = [chance - max, 0.9, 3, max].

    Bounds a in [-1, 0], L0 >= 0, k >= 0, b in [0, 1] (Bhagia et al. 2024 §3.2; code `sigmoid`).
    `weights` scale each point's residual (1/sigma); None weighs all points alike.
    """
    from scipy.optimize import curve_fit

    loss, acc = np.asarray(loss, float), np.asarray(acc, float)
    sigma = None if weights is None else 1.0 / np.asarray(weights, float)
    p0 = [chance - max_acc, 0.9, 3.0, max_acc]
    p, cov = curve_fit(
        sigmoid,
        loss,
        acc,
        p0=p0,
        sigma=sigma,
        bounds=([-1.0, 0.0, 0.0, 0.0], [0.0, np.inf, np.inf, 1.0]),
        maxfev=500_000,
    )
    cov = np.where(np.isfinite(cov), cov, 0.0)
    resid = acc - sigmoid(loss, *p)
    return AccuracyCurve(params=p, cov=cov, resid_std=float(np.std(resid)))
