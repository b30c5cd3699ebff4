"""The τ-capability boundary: a quantile sigmoid over log-compute, its loss, optimiser and metrics.

    q_τ(z) = y0 + L·σ(b·(z − z*))        z = log10(pretraining FLOPs)

fitted by minimising the smoothed pinball loss plus λ_b·b² under 0 ≤ y0, L, y0 + L ≤ 1,
b ∈ [0.05, 50], z* ∈ [z_min, z_max] (Zhang, Jin, Syrgkanis, Kakade, arXiv 2602.15327 and the
authors' fitting code; METHODS.md §8.2). The objective is non-convex in (b, z*) but convex in
(y0, L) for fixed (b, z*), hence a grid over (b, z*) with a convex solve for (y0, L) at each
point, then a full refinement of the best candidates under a τ/κ continuation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Defaults of arXiv 2602.15327 (METHODS.md §8.2).
TAU = 0.98
KAPPA = 50.0
# METHODS §8.2 gives λ_b = 1e-2 (the optimiser's default in the authors' code); their frontier
# wrapper passes 1e-3. At ~120 models 1e-2 dominates the loss and flattens the slope: 1e-3 gives
# 88-97 % lower top-30 % compute-split pinball than a constant quantile vs 31-71 % (bench).
LAMBDA_B = 1e-3
B_RANGE = (0.05, 50.0)
N_REFINE = 10
MAXITER = 700


@dataclass(frozen=True)
class SigmoidParams:
    """Floor y0, height L (ceiling y0 + L), slope b per decade of FLOPs, inflection z*."""

    y0: float
    L: float
    b: float
    z_star: float

    def to_json(self) -> dict:
        return asdict(self)


def expit(x: np.ndarray) -> np.ndarray:
    """Logistic σ(x), overflow-free."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def boundary_curve(z: np.ndarray, p: SigmoidParams) -> np.ndarray:
    """q(z) = y0 + L·σ(b(z − z*))."""
    return p.y0 + p.L * expit(p.b * (np.asarray(z, dtype=float) - p.z_star))


def pinball_loss(y: np.ndarray, q: np.ndarray, tau: float = TAU) -> float:
    """Mean pinball loss of quantile predictions q at level τ (u = y − q)."""
    u = np.asarray(y, dtype=float) - np.asarray(q, dtype=float)
    return float(np.mean(np.maximum(tau * u, (tau - 1.0) * u)))


def smoothed_pinball(u: np.ndarray, tau: float = TAU, kappa: float = KAPPA) -> np.ndarray:
    """Softplus-smoothed pinball (1/κ)·log(1 + e^{κu}) + (τ − 1)·u; tends to the pinball as κ → ∞."""
    u = np.asarray(u, dtype=float)
    return np.logaddexp(0.0, kappa * u) / kappa + (tau - 1.0) * u


def coverage(y: np.ndarray, q: np.ndarray) -> float:
    """Share of points on or under the boundary; should be τ for a τ-quantile."""
    return float(np.mean(np.asarray(y) <= np.asarray(q)))


def binned_coverage_mae(
    z: np.ndarray, y: np.ndarray, q: np.ndarray, tau: float = TAU, n_bins: int = 10, min_per_bin: int = 30
) -> float:
    """Mean |coverage − τ| over equal-mass bins of z (about 10 bins, at least 30 points each)."""
    z, y, q = (np.asarray(a, dtype=float) for a in (z, y, q))
    n_bins = max(1, min(n_bins, len(z) // min_per_bin))
    order = np.argsort(z, kind="stable")
    errors = [abs(coverage(y[idx], q[idx]) - tau) for idx in np.array_split(order, n_bins)]
    return float(np.mean(errors))


def _objective(
    theta: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray, tau: float, kappa: float, lam: float
) -> tuple[float, np.ndarray]:
    """Weighted mean smoothed pinball + λ_b·b² and its gradient in θ = (y0, L, log b, z*)."""
    y0, height, log_b, z_star = theta
    b = np.exp(log_b)
    s = expit(b * (z - z_star))
    u = y - y0 - height * s
    loss = float(w @ smoothed_pinball(u, tau, kappa)) + lam * b * b
    dq = -w * (expit(kappa * u) + tau - 1.0)  # d loss / d q per point
    ds = height * s * (1.0 - s)
    grad = np.array(
        [
            dq.sum(),
            dq @ s,
            (dq @ (ds * (z - z_star))) * b + 2.0 * lam * b * b,
            -(dq @ ds) * b,
        ]
    )
    return loss, grad


def _floor_height_problem(
    s: np.ndarray, y: np.ndarray, w: np.ndarray, tau: float, kappa: float, start: np.ndarray
) -> tuple[np.ndarray, float]:
    """Best (y0, L) for a fixed sigmoid shape s = σ(b(z − z*)): a convex problem, solved by SLSQP."""
    from scipy.optimize import minimize

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        u = y - x[0] - x[1] * s
        dq = -w * (expit(kappa * u) + tau - 1.0)
        return float(w @ smoothed_pinball(u, tau, kappa)), np.array([dq.sum(), dq @ s])

    res = minimize(
        f,
        start,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0), (0.0, 1.0)],
        constraints=[
            {"type": "ineq", "fun": lambda x: 1.0 - x[0] - x[1], "jac": lambda x: np.array([-1.0, -1.0])}
        ],
        options={"maxiter": 200, "ftol": 1e-12},
    )
    return res.x, float(res.fun)


def _refine(
    theta: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    bounds: list[tuple[float, float]],
    stages: list[tuple[float, float]],
    lam: float,
) -> tuple[np.ndarray, float]:
    """Full SLSQP over (y0, L, log b, z*) through the continuation stages; the last stage is the target."""
    from scipy.optimize import minimize

    constraint = {
        "type": "ineq",
        "fun": lambda t: 1.0 - t[0] - t[1],
        "jac": lambda t: np.array([-1.0, -1.0, 0, 0]),
    }
    fun = np.inf
    for tau, kappa in stages:
        res = minimize(
            _objective,
            theta,
            args=(z, y, w, tau, kappa, lam),
            jac=True,
            method="SLSQP",
            bounds=bounds,
            constraints=[constraint],
            options={"maxiter": MAXITER, "ftol": 1e-12},
        )
        theta = np.clip(res.x, [lo for lo, _ in bounds], [hi for _, hi in bounds])
        theta[1] = min(theta[1], 1.0 - theta[0])  # SLSQP may end a hair outside y0 + L ≤ 1
        fun = _objective(theta, z, y, w, tau, kappa, lam)[0]
    return theta, fun


def continuation_stages(tau: float, kappa: float) -> list[tuple[float, float]]:
    """τ 0.90 → 0.95 → τ, with κ 10 → 25 → κ at the first τ only (METHODS.md §8.2)."""
    taus = [t for t in (0.90, 0.95) if t < tau] + [tau]
    kappas = [k for k in (10.0, 25.0) if k < kappa] + [kappa]
    return [(taus[0], k) for k in kappas] + [(t, kappa) for t in taus[1:]]


@dataclass(frozen=True)
class FitResult:
    params: SigmoidParams
    objective: float
    n_starts: int


def fit_quantile_sigmoid(
    z: np.ndarray,
    y: np.ndarray,
    *,
    tau: float = TAU,
    kappa: float = KAPPA,
    lambda_b: float = LAMBDA_B,
    weights: np.ndarray | None = None,
    n_refine: int = N_REFINE,
    continuation: bool = True,
    seed: int = 0,
) -> FitResult:
    """Multi-start fit of the τ-quantile sigmoid (arXiv 2602.15327; METHODS.md §8.2).

    1. (z*, b) grid: z* over linspace(z_min, z_max, 9) ∪ quantiles {.15, .35, .5, .65, .85} of z,
       b over geomspace(0.05, 50, 9), plus 12 random pairs; (y0, L) solved at each, at the first
       continuation stage (τ 0.90, κ 10), where the candidates are ranked.
    2. The best `n_refine` candidates are refined jointly under the τ/κ continuation.
    3. The lowest objective at the target (τ, κ) wins.
    """
    z = np.asarray(z, dtype=float)
    y = np.asarray(y, dtype=float)
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(y))):
        raise ValueError("z and y must be finite; drop rows without compute or score first")
    if len(z) < 4:
        raise ValueError(f"a capability boundary needs at least 4 points, got {len(z)}")
    w = np.ones_like(z) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()  # a weighted mean, so λ_b keeps its meaning at any n
    z_min, z_max = float(z.min()), float(z.max())
    if z_max - z_min < 1e-9:
        raise ValueError("all points have the same compute; the boundary's shape is not identifiable")
    rng = np.random.default_rng(seed)

    z_grid = np.unique([*np.linspace(z_min, z_max, 9), *np.quantile(z, [0.15, 0.35, 0.5, 0.65, 0.85])])
    b_grid = np.geomspace(*B_RANGE, 9)
    pairs = [(zs, b) for zs in z_grid for b in b_grid]
    pairs += list(zip(rng.uniform(z_min, z_max, 12), np.exp(rng.uniform(*np.log(B_RANGE), 12))))

    # Candidates are ranked at the first continuation stage, where the loss is smoothest.
    stages = continuation_stages(tau, kappa) if continuation else [(tau, kappa)]
    tau0, kappa0 = stages[0]
    y0_start = float(np.clip(np.quantile(y, 0.1), 0.0, 1.0))
    start = np.array([y0_start, float(np.clip(np.quantile(y, tau) - y0_start, 0.0, 1.0 - y0_start))])
    candidates = []
    for z_star, b in pairs:
        s = expit(b * (z - z_star))
        (y0, height), fun = _floor_height_problem(s, y, w, tau0, kappa0, start)
        fun = fun + lambda_b * b * b if np.isfinite(fun) else np.inf
        candidates.append((fun, np.array([y0, height, np.log(b), z_star])))
    candidates.sort(key=lambda c: c[0])

    bounds = [(0.0, 1.0), (0.0, 1.0), tuple(np.log(B_RANGE)), (z_min, z_max)]
    best_fun, best_theta = np.inf, candidates[0][1]
    for _, theta in candidates[:n_refine]:
        theta, fun = _refine(theta, z, y, w, bounds, stages, lambda_b)
        if fun < best_fun:
            best_fun, best_theta = fun, theta
    y0, height, log_b, z_star = (float(v) for v in best_theta)
    return FitResult(SigmoidParams(y0, height, float(np.exp(log_b)), z_star), float(best_fun), len(pairs))
