"""Geometry analysis of a model's tokens: frequency power law, frequency vs embedding norm, δ-hyperbolicity.

Modules: `corpus` (texts and token ids), `frequency` (counts and curves), `powerlaw_fit` (discrete power
law), `norms` (frequency vs norm, word groups), `embeddings` (input embeddings, final hidden states),
`delta` (exact Gromov δ), `references` (calibration spaces), `plots`, `report`, `pipeline` (`hyplora analyze`).
"""

from .delta import (
    DeltaResult, delta_at_base_point, delta_hyperbolicity, delta_hyperbolicity_of_points, gromov_delta,
    pairwise_distances,
)
from .pipeline import AnalysisConfig, run_analysis
from .powerlaw_fit import PowerLawFit, fit_power_law

__all__ = [
    "AnalysisConfig", "DeltaResult", "PowerLawFit", "delta_at_base_point", "delta_hyperbolicity",
    "delta_hyperbolicity_of_points", "fit_power_law", "gromov_delta", "pairwise_distances", "run_analysis",
]
