"""JSON output: strict JSON (NaN -> null), written atomically (no temporary files left behind)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyplora.analysis.report import write_json_atomically


def test_json_is_strict_and_complete(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomically({"a": np.arange(3), "b": float("nan"), "c": (1.5, np.float32(2.0))}, path)
    assert json.loads(path.read_text()) == {"a": [0, 1, 2], "b": None, "c": [1.5, 2.0]}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text('{"old": 1}')
    with pytest.raises(TypeError):
        write_json_atomically({"bad": object()}, path)
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
