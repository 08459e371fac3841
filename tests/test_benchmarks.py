"""The performance scripts of issue 6 run end to end on the CPU in their smoke modes (their numbers mean nothing
here; benchmarks/RESULTS.md holds the GPU measurements)."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> None:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_train_step_smoke_run_reports_ratios_to_lora(tmp_path):
    out = tmp_path / "train_step.json"
    run_script("train_step.py", "--tiny", "--device", "cpu", "--methods", "lora,hyplora-lorentz,hyplora-lorentz-full",
               "--rounds", "2", "--compile", "none,main-thread", "--json", str(out))
    results = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    methods = {"lora", "hyplora-lorentz", "hyplora-lorentz-full"}
    assert set(results) == methods | {f"{m}@main-thread" for m in methods}
    assert results["lora"]["time_ratio"] == 1.0 and results["lora@main-thread"]["time_ratio"] == 1.0
    # each mode is compared with LoRA in the same mode
    expected = results["hyplora-lorentz@main-thread"]["median_ms"] / results["lora@main-thread"]["median_ms"]
    assert results["hyplora-lorentz@main-thread"]["time_ratio"] == pytest.approx(expected)
    for r in results.values():
        assert r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["final_loss"] == r["final_loss"]  # not NaN


@pytest.mark.slow
def test_decode_smoke_run_reports_ratios_to_lora(tmp_path):
    out = tmp_path / "decode.json"
    run_script("decode.py", "--tiny", "--model", "smollm2", "--methods", "base,lora,hyplora-lorentz",
               "--batch-sizes", "1", "--cache", "static", "--json", str(out))
    text = out.read_text()
    assert "hyplora-lorentz" in text and "ratio_to_lora" in text and "static KV cache" in text
    rows = {row["method"]: row for row in json.loads(text)["cases"][0]["rows"]}
    paired = rows["hyplora-lorentz"]["paired_ratio_to_lora"]
    assert len(paired) == len(rows["lora"]["seconds"])
    assert rows["hyplora-lorentz"]["paired_ratio_to_lora_median"] == pytest.approx(statistics.median(paired))
    # the decoding steps alone: each repeat's full call minus its 1-token (prefill) call
    steps = {m: statistics.median(t - p for t, p in zip(rows[m]["seconds"], rows[m]["prefill_seconds"]))
             for m in ("lora", "hyplora-lorentz")}
    assert len(rows["lora"]["prefill_seconds"]) == len(rows["lora"]["seconds"])
    expected = steps["lora"] / steps["hyplora-lorentz"]
    assert rows["hyplora-lorentz"]["decode_only_ratio_to_lora"] == pytest.approx(expected)


def test_gpu_busy_time_counts_kernels_and_not_annotation_spans():
    """A GPU-side user annotation (``Optimizer.step#AdamW.step``) spans its kernels and the idle gaps between
    them; counted as busy time it would double-count the optimizer."""
    from types import SimpleNamespace

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import device_kernels
    finally:
        sys.path.remove(str(BENCHMARKS))
    events = [SimpleNamespace(name="gemm", device_type="DeviceType.CUDA", is_user_annotation=False),
              SimpleNamespace(name="Optimizer.step#AdamW.step", device_type="DeviceType.CUDA",
                              is_user_annotation=True),
              SimpleNamespace(name="aten::mm", device_type="DeviceType.CPU", is_user_annotation=False)]
    kernels = device_kernels(SimpleNamespace(events=lambda: events))
    assert [e.name for e in kernels] == ["gemm"]



@pytest.mark.slow
def test_compiled_step_host_smoke_run_finds_one_graph_and_passing_guards(tmp_path):
    out = tmp_path / "host.json"
    run_script("compiled_step_host.py", "--device", "cpu", "--methods", "lora,hyplora-lorentz", "--layers", "1,2",
               "--checks", "20", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {(r["method"], r["layers"]) for r in rows} == {(m, n) for m in ("lora", "hyplora-lorentz") for n in (1, 2)}
    for r in rows:
        # the recorded decoding call passes the guards of the one graph compiled for it, so the time is of a full check
        assert r["graphs"] == 1 and r["graph_breaks"] == 0 and r["guards_pass"] and r["guard_check_us"] > 0
        assert r["adapted_layers"] == 5 * r["layers"]
