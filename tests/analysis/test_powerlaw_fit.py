"""The discrete power-law fit recovers known exponents and reports the likelihood-ratio tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hyplora.analysis.powerlaw_fit import fit_power_law
from hyplora.errors import HypLoraUserError


@pytest.mark.parametrize("gamma", [1.9, 2.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_exponent_of_a_zeta_distribution(gamma, seed):
    # scipy's zipf is the exact discrete power law p(k) = k^-γ / ζ(γ), k >= 1.
    samples = stats.zipf.rvs(gamma, size=20000, random_state=seed)
    fit = fit_power_law(samples)
    assert fit.gamma == pytest.approx(gamma, abs=0.05)
    assert fit.xmin >= 1
    assert 0 < fit.ks_distance < 0.05
    assert fit.n_total == 20000 and 0 < fit.n_tail <= 20000
    by_name = {c.alternative: c for c in fit.comparisons}
    assert set(by_name) == {"lognormal", "exponential"}
    # An exponential is decisively worse than the true power law.
    assert by_name["exponential"].normalized_ratio > 0 and by_name["exponential"].p_value < 0.01
    assert by_name["exponential"].preferred == "power_law"
    for comparison in fit.comparisons:
        assert 0.0 <= comparison.p_value <= 1.0


def test_fixed_xmin_is_respected():
    samples = stats.zipf.rvs(2.2, size=20000, random_state=3)
    fit = fit_power_law(samples, xmin=5)
    assert fit.xmin == 5
    assert fit.n_tail == int((samples >= 5).sum())
    assert fit.gamma == pytest.approx(2.2, abs=0.08)


def test_exponential_data_is_not_called_a_power_law():
    samples = np.floor(stats.expon.rvs(scale=20, size=5000, random_state=0)).astype(int) + 1
    fit = fit_power_law(samples, xmin=1)
    exponential = {c.alternative: c for c in fit.comparisons}["exponential"]
    assert exponential.normalized_ratio < 0 and exponential.preferred == "exponential"


def test_zero_counts_are_ignored_and_degenerate_data_is_an_error():
    with pytest.raises(HypLoraUserError, match="two distinct"):
        fit_power_law(np.array([0, 3, 3, 3, 0]))
    with pytest.raises(HypLoraUserError):
        fit_power_law(np.zeros(10, dtype=int))
