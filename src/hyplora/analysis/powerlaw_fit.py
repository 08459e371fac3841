"""Discrete power-law fit of token frequencies with the `powerlaw` package (Clauset, Shalizi & Newman 2009).

The data are the counts c_t of the observed token types. The model is p(c) = c^(-γ) / ζ(γ, xmin) for
c >= xmin; γ is the maximum-likelihood exponent and xmin the cut-off minimising the Kolmogorov-Smirnov
distance D = max |S(c) - P(c)| between the empirical and fitted CDFs of the tail. The likelihood-ratio test
compares the power law with a log-normal and with an exponential on the same tail: R = Σ log(p_pl / p_alt),
normalised by its standard deviation (R > 0 favours the power law) and its two-sided p-value (Vuong's test;
a small p means the sign of R is significant).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import HypLoraUserError

ALTERNATIVES = ("lognormal", "exponential")
# powerlaw's default bound for γ is [0, 3]; word-frequency exponents lie well inside (1, 6).
GAMMA_RANGE = (1.0, 6.0)


@dataclass(frozen=True)
class LikelihoodRatio:
    alternative: str
    normalized_ratio: float  # > 0: the power law fits better
    p_value: float
    preferred: str  # "power_law", the alternative, or "neither" when p >= 0.1


@dataclass(frozen=True)
class PowerLawFit:
    gamma: float
    gamma_standard_error: float
    xmin: float
    ks_distance: float
    n_tail: int
    n_total: int
    comparisons: tuple[LikelihoodRatio, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def fit_power_law(counts: np.ndarray, *, xmin: float | None = None, significance: float = 0.1) -> PowerLawFit:
    """Fit p(c) ∝ c^(-γ), c >= xmin, to the positive entries of ``counts`` (discrete=True).

    ``xmin=None`` lets powerlaw choose it by minimum KS distance. Needs at least two distinct count values.
    """
    import powerlaw

    data = np.asarray(counts)
    data = data[data > 0]
    if np.unique(data).size < 2:
        raise HypLoraUserError(
            f"a power-law fit needs at least two distinct token counts; got {data.size} tokens "
            f"with {np.unique(data).size} distinct count(s) (use more text)"
        )
    with warnings.catch_warnings():
        # powerlaw warns about optimiser starting points and xmin candidates on every fit.
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(data, discrete=True, xmin=xmin, verbose=0,
                           parameter_ranges={"alpha": list(GAMMA_RANGE)})
        law = fit.power_law
        comparisons = []
        for alternative in ALTERNATIVES:
            ratio, p_value = fit.distribution_compare("power_law", alternative, normalized_ratio=True)
            if p_value >= significance or not np.isfinite(ratio):
                preferred = "neither"
            else:
                preferred = "power_law" if ratio > 0 else alternative
            comparisons.append(LikelihoodRatio(alternative, float(ratio), float(p_value), preferred))
    return PowerLawFit(
        gamma=float(law.alpha),
        gamma_standard_error=float(law.sigma),
        xmin=float(fit.xmin),
        ks_distance=float(law.D),
        n_tail=int(fit.n),
        n_total=int(data.size),
        comparisons=tuple(comparisons),
    )
