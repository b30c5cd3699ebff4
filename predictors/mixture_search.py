"""Search for the mixture with the lowest predicted loss (RegMix, METHODS §9a).

Draw many mixtures from Dirichlet(prior × concentration), predict each one's loss with a fitted
``MixturePredictor``, and return the mean of the ``top_k`` best. When the tokens available per
domain are known, a domain may not be repeated more than ``max_epochs`` times over the planned
token budget; this is enforced by **rejection** (draws that break a cap are discarded, as RegMix
does when it generates mixtures). The caps and the simplex are convex, so the mean of accepted
draws obeys the caps too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assay.predictors.mixture import MixturePredictor
from assay.predictors.mixture_data import domain_name

MAX_EPOCHS = 15.0  # RegMix synthesize_mixture.py: MAXIMUM_USAGE, at most 15 epochs of a domain
N_SAMPLES = 100_000  # RegMix: 100k candidate mixtures ...
TOP_K = 128  # ... of which the 128 with the lowest predicted loss are averaged
MAX_DRAW_FACTOR = 100  # give up after drawing 100x n_samples when caps reject most draws


@dataclass
class SearchResult:
    weights: dict[str, float]  # the proposed mixture, full column names
    predicted: float  # predicted loss of the proposed (averaged) mixture
    lower: float
    upper: float
    top_k_predicted: float  # mean predicted loss of the top-k draws themselves
    n_drawn: int
    n_accepted: int
    top_k: int
    prior: dict[str, float]
    caps: dict[str, float] | None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def domain_caps(
    domains: list[str],
    domain_tokens: dict[str, float],
    total_tokens: float | None = None,
    max_epochs: float = MAX_EPOCHS,
) -> np.ndarray:
    """Upper bound per domain weight: max_epochs × available tokens / total budget (at most 1).

    Without a budget the total is the sum of the available tokens (RegMix: 15 × the prior weight).
    """
    by_name = {domain_name(k): v for k, v in domain_tokens.items()}
    missing = [domain_name(d) for d in domains if domain_name(d) not in by_name]
    if missing:
        raise ValueError(f"no token count for domains {missing} (give 0 to exclude a domain)")
    extra = sorted(set(by_name) - {domain_name(d) for d in domains})
    if extra:
        raise ValueError(f"token counts for domains the predictor does not know: {extra}")
    available = np.array([by_name[domain_name(d)] for d in domains], dtype=float)
    total = float(total_tokens) if total_tokens is not None else float(available.sum())
    if total <= 0:
        raise ValueError("the token budget must be positive")
    caps = np.minimum(max_epochs * available / total, 1.0)
    if caps.sum() < 1.0:
        raise ValueError(
            f"infeasible: {total:.4g} tokens need more than {max_epochs:g} epochs of the available "
            f"{available.sum():.4g} tokens (the caps sum to {caps.sum():.3f} < 1)"
        )
    return caps


def token_prior(domains: list[str], domain_tokens: dict[str, float]) -> np.ndarray:
    """The token distribution over ``domains`` (RegMix's prior)."""
    by_name = {domain_name(k): v for k, v in domain_tokens.items()}
    tokens = np.array([by_name.get(domain_name(d), 0.0) for d in domains], dtype=float)
    if tokens.sum() <= 0:
        raise ValueError("no tokens available in any domain")
    return tokens / tokens.sum()


def sample_mixtures(
    prior: np.ndarray,
    n: int,
    rng: np.random.Generator,
    concentration: float = 1.0,
    caps: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Up to ``n`` Dirichlet(prior × concentration) draws that respect ``caps``; (draws, number drawn)."""
    active = prior > 0  # a domain without prior mass (no tokens) always gets weight 0
    alpha = prior[active] * concentration
    accepted, drawn = [], 0
    while sum(len(a) for a in accepted) < n and drawn < MAX_DRAW_FACTOR * n:
        batch = min(max(n, 10_000), MAX_DRAW_FACTOR * n - drawn)
        draws = np.zeros((batch, len(prior)))
        draws[:, active] = rng.dirichlet(alpha, size=batch)
        drawn += batch
        ok = np.isfinite(draws).all(axis=1)
        if caps is not None:
            ok &= (draws <= caps + 1e-12).all(axis=1)
        accepted.append(draws[ok])
    out = np.concatenate(accepted)[:n] if accepted else np.zeros((0, len(prior)))
    return out, drawn


def search_mixture(
    predictor: MixturePredictor,
    n_samples: int = N_SAMPLES,
    top_k: int = TOP_K,
    prior: np.ndarray | None = None,
    concentration: float = 1.0,
    caps: np.ndarray | None = None,
    seed: int = 42,
    higher_is_better: bool | None = None,
) -> SearchResult:
    """Propose the mean of the ``top_k`` of ``n_samples`` Dirichlet draws with the lowest predicted loss.

    ``prior`` defaults to the mean of the predictor's training mixtures (pass ``token_prior`` when
    the tokens per domain are known); ``concentration`` 1.0 is RegMix's. ``higher_is_better``
    takes the highest predictions instead; None decides from the fit: a recipe fit of a metric
    that is not a loss (accuracy, a score) is maximised.
    """
    if higher_is_better is None:
        higher_is_better = predictor.fitted_on_.get("target_is_loss") is False
    if top_k < 1 or n_samples < top_k:
        raise ValueError(f"need 1 <= top_k <= n_samples (got top_k={top_k}, n_samples={n_samples})")
    domains = predictor.domains_
    prior = np.asarray(predictor.prior_ if prior is None else prior, dtype=float)
    if prior.shape != (len(domains),) or (prior < 0).any() or prior.sum() <= 0:
        raise ValueError(f"the prior needs {len(domains)} non-negative weights with a positive sum")
    if caps is not None:
        prior = np.where(caps > 0, prior, 0.0)  # a domain capped at 0 is left out, not drawn and rejected
    if prior.sum() <= 0:
        raise ValueError("every domain with prior mass is capped at 0")
    prior = prior / prior.sum()
    draws, drawn = sample_mixtures(prior, n_samples, np.random.default_rng(seed), concentration, caps)
    if len(draws) < top_k:
        raise ValueError(
            f"only {len(draws)} of {drawn} Dirichlet draws respect the caps (need {top_k}); "
            "raise --max-epochs, lower --tokens, or raise --concentration"
        )
    predicted, _ = predictor.predict_matrix(draws)
    best = np.argsort(-predicted if higher_is_better else predicted, kind="stable")[:top_k]
    mixture = draws[best].mean(axis=0)
    mixture = mixture / mixture.sum()
    estimate = predictor.predict_mixture(dict(zip(domains, mixture)))
    return SearchResult(
        weights={d: float(w) for d, w in zip(domains, mixture)},
        predicted=estimate["predicted"],
        lower=estimate["lower"],
        upper=estimate["upper"],
        top_k_predicted=float(predicted[best].mean()),
        n_drawn=drawn,
        n_accepted=len(draws),
        top_k=top_k,
        prior={d: float(p) for d, p in zip(domains, prior)},
        caps=None if caps is None else {d: float(c) for d, c in zip(domains, caps)},
    )
