"""Calibration spaces give the δ_rel values they are meant to calibrate."""

from __future__ import annotations

import numpy as np
import torch

from hyplora.analysis.references import calibrate, random_graph_distances


def test_calibration_values():
    results = {r.space: r for r in calibrate(n_points=120, n_samples=2, seed=0)}
    assert results["tree"].mean == 0.0
    assert 0.9 < results["sphere"].mean <= 1.0
    assert 0.0 < results["gaussian"].mean < results["sphere"].mean
    assert 0.0 < results["random_graph"].mean <= 1.0
    assert all(len(r.relative_deltas) == 2 for r in results.values())


def test_random_graph_is_connected_metric():
    distances = random_graph_distances(80, np.random.default_rng(1))
    assert torch.isfinite(distances).all()
    assert torch.equal(distances, distances.T) and (distances.diagonal() == 0).all()
