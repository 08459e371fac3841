"""The performance scripts of issue 6 run end to end on the CPU in their smoke modes (their numbers mean nothing
here; benchmarks/RESULTS.md holds the GPU measurements)."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
               "--batch-sizes", "1", "--cache", "static", "--host-profile", "--json", str(out))
    text = out.read_text()
    assert "hyplora-lorentz" in text and "ratio_to_lora" in text and "static KV cache" in text
    rows = {row["method"]: row for row in json.loads(text)["cases"][0]["rows"]}
    paired = rows["hyplora-lorentz"]["paired_ratio_to_lora"]
    assert len(paired) == len(rows["lora"]["seconds"])
    assert rows["hyplora-lorentz"]["paired_ratio_to_lora_median"] == pytest.approx(statistics.median(paired))
    low, high = rows["hyplora-lorentz"]["paired_ratio_to_lora_interval"]
    assert min(paired) <= low <= statistics.median(paired) <= high <= max(paired)
    # the decoding steps alone: each repeat's full call minus its 1-token (prefill) call
    steps = {m: statistics.median(t - p for t, p in zip(rows[m]["seconds"], rows[m]["prefill_seconds"]))
             for m in ("lora", "hyplora-lorentz")}
    assert len(rows["lora"]["prefill_seconds"]) == len(rows["lora"]["seconds"])
    expected = steps["lora"] / steps["hyplora-lorentz"]
    assert rows["hyplora-lorentz"]["decode_only_ratio_to_lora"] == pytest.approx(expected)
    # --host-profile: cProfile's heaviest Python functions of one generate call, heaviest first, per token
    profile = rows["hyplora-lorentz"]["host_profile"]
    own = [entry["own_us_per_token"] for entry in profile]
    assert 0 < len(profile) <= 25 and own == sorted(own, reverse=True) and own[0] > 0
    assert any("hyperbolic_branch" in entry["function"] or "_inference_branch" in entry["function"]
               for entry in rows["hyplora-lorentz"]["host_profile"])


@pytest.mark.slow
def test_decode_takes_the_full_depth_8b_shape_and_a_one_kernel_limit(tmp_path):
    """--model llama8b (all 32 layers; tiny: 4) and --fused-max-rows, which the header records; a negative limit
    is refused."""
    out = tmp_path / "decode.json"
    run_script("decode.py", "--tiny", "--model", "llama8b", "--methods",
               "lora,hyplora-lorentz,hyplora-lorentz-jit,hyplora-lorentz-matmul,hyplora-lorentz-two-pass",
               "--batch-sizes", "1", "--repeats", "1",
               "--fused-max-rows", "0", "--json", str(out))
    report = json.loads(out.read_text())
    assert "FUSED_MAX_ROWS=0 FUSED_NARROW_MAX_ROWS=0" in report["header"][1]
    rows = {row["method"]: row for row in report["cases"][0]["rows"]}
    assert rows["lora"]["adapted_layers"] == rows["hyplora-lorentz"]["adapted_layers"] == 4 * 5
    # the same adapter with every launch through Triton's JIT entry (on a GPU; the same path here)
    assert rows["hyplora-lorentz-jit"]["adapted_layers"] == 4 * 5
    assert rows["hyplora-lorentz-jit"]["label"] == "hyplora lorentz, Triton's JIT entry"
    assert rows["hyplora-lorentz-matmul"]["label"] == "hyplora lorentz, matmul path only"
    assert rows["hyplora-lorentz-two-pass"]["label"] == "hyplora lorentz, two passes on the widest layers"
    refused = subprocess.run([sys.executable, str(BENCHMARKS / "decode.py"), "--tiny", "--fused-max-rows", "-1"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "--fused-max-rows must be >= 0" in refused.stderr


def test_train_step_kernel_settings_per_method():
    train_step = _import_from_benchmarks("train_step")
    assert train_step.split_settings("hyplora-lorentz", 32) == ("hyplora-lorentz", {})
    assert train_step.split_settings("hyplora-stereographic+fwd64x8+bwd16x4", 32) == (
        "hyplora-stereographic", {"GATE_FORWARD_BLOCKS": (64, 8), "GATE_BACKWARD_BLOCKS": (16, 4)})
    assert train_step.split_settings("hyplora-lorentz+gramtf32x3", 100) == (
        "hyplora-lorentz", {"GRAM_PRECISION": "tf32x3"})
    assert train_step.split_settings("hyplora-lorentz+gramslabs32+gramtf32x3+wcast", 32) == (
        "hyplora-lorentz", {"GRAM_MAX_SLABS": 32, "GRAM_PRECISION": "tf32x3", "W_TERM_FROM_BITS": False})
    for bad, rank in (("hyplora-lorentz+bwd48x4", 32), ("hyplora-lorentz+bwd32x3", 32), ("hyplora-lorentz+mid32x4", 32),
                      ("lora+bwd32x8", 32), ("lora+gramtf32x3", 32), ("hyplora-lorentz+bwd16x8", 100),
                      ("hyplora-lorentz+gramslabs0", 32), ("lora+gramslabs8", 32)):
        with pytest.raises(SystemExit):
            train_step.split_settings(bad, rank)


def test_train_step_kernel_settings_hold_during_the_methods_steps_only():
    from types import SimpleNamespace

    from hyplora.adapter import functional, kernels

    train_step = _import_from_benchmarks("train_step")
    args = SimpleNamespace(hidden=64, intermediate=128, heads=4, kv_heads=2, layers=1, vocab=100, batch=1, seq=8,
                           rank=8, optimizer="foreach")
    before = (kernels.GRAM_PRECISION, kernels.GATE_BACKWARD_BLOCKS, functional.W_TERM_FROM_BITS)
    model, step = train_step.make_run("hyplora-lorentz+gramtf32x3+bwd32x8+wcast", args, torch.device("cpu"),
                                      torch.float32)
    seen = []
    model.register_forward_hook(lambda *_: seen.append(
        (kernels.GRAM_PRECISION, dict(kernels.GATE_BACKWARD_BLOCKS), functional.W_TERM_FROM_BITS)))
    step()
    assert seen == [("tf32x3", {**before[1], 16: (32, 8)}, False)]  # rank 8: padded to 16
    assert (kernels.GRAM_PRECISION, kernels.GATE_BACKWARD_BLOCKS, functional.W_TERM_FROM_BITS) == before
    assert before[1][16] == (64, 4) and before[2]


def test_decode_method_suffixes_force_the_no_grad_paths_and_restore_the_limits():
    from hyplora.adapter import kernels

    decode = _import_from_benchmarks("decode")
    direct = kernels.DIRECT_LAUNCH
    names = ("FUSED_MAX_ROWS", "FUSED_NARROW_MAX_ROWS", "TWO_PASS_MAX_ROWS")
    package = {name: getattr(kernels, name) for name in names}
    try:
        off, on = dict.fromkeys(kernels.VARIANT_IDS, 0), dict.fromkeys(kernels.VARIANT_IDS, 256)
        rows, narrow_rows = package["FUSED_MAX_ROWS"], package["FUSED_NARROW_MAX_ROWS"]
        expected = {"hyplora-lorentz-matmul": (0, 0, off), "hyplora-lorentz-full-one-pass": (rows, narrow_rows, off),
                    "hyplora-lorentz-two-pass": (rows, narrow_rows, on),
                    "hyplora-lorentz-two-pass-all": (0, narrow_rows, on)}
        for method, limits in expected.items():
            decode.select_launches(method)
            assert tuple(getattr(kernels, name) for name in names) == limits, method
            assert kernels.DIRECT_LAUNCH
        decode.select_launches("hyplora-lorentz-jit")  # no path suffix: the package's limits again
        assert {name: getattr(kernels, name) for name in names} == package and not kernels.DIRECT_LAUNCH
    finally:
        decode.select_launches("hyplora-lorentz")
        decode._ONE_KERNEL_LIMITS.clear()
        kernels.DIRECT_LAUNCH = direct
    assert {name: getattr(kernels, name) for name in names} == package


@pytest.mark.slow
def test_prefill_smoke_run_times_each_method_under_each_fused_setting(tmp_path):
    out = tmp_path / "prefill.json"
    run_script("prefill.py", "--tiny", "--model", "smollm2", "--methods", "lora,hyplora-lorentz",
               "--batch-sizes", "1", "--fused-max-rows", "256,0", "--host-profile", "--json", str(out))
    rows = json.loads(out.read_text())["cases"][0]["rows"]
    assert [(r["method"], r["fused_max_rows"]) for r in rows] == [
        ("lora", None), ("hyplora-lorentz", 256), ("hyplora-lorentz", 0)]
    lora = rows[0]
    assert lora["ratio_to_lora"] == 1.0 and len(lora["forward_s"]) == len(rows[1]["forward_s"]) == 3
    for row in rows[1:]:
        assert row["ratio_to_lora"] == pytest.approx(row["forward_s_median"] / lora["forward_s_median"])
        assert row["extra_us_per_layer"] == pytest.approx(
            (row["forward_s_median"] - lora["forward_s_median"]) * 1e6 / row["adapted_layers"])
        assert all(h <= t for h, t in zip(row["host_s"], row["forward_s"]))  # returned before it synchronized
        assert row["host_profile"] and row["host_profile"][0]["own_us"] > 0
    with pytest.raises(AssertionError, match="fused-max-rows"):
        run_script("prefill.py", "--tiny", "--fused-max-rows", "many")


@pytest.mark.slow
def test_compiled_decoder_layer_no_grad_uses_loras_matmuls_and_no_opaque_operation(tmp_path):
    """One compiled SmolLM2-shaped decoder layer, no-grad, 1 token (a decoding step): the HypLoRA branch is LoRA's
    two matmuls per adapted layer plus inductor's own kernels, never one of hyplora's opaque operations."""
    run_script("compiled_kernels.py", "--decoding", "smollm2", "--tokens", "1", "--rank", "8", "--dump", str(tmp_path))
    codes = {path.stem.removeprefix("smollm2-"): path.read_text() for path in tmp_path.glob("smollm2-*.py")}
    assert set(codes) == {"base", "lora", "hyplora-lorentz", "hyplora-stereographic", "hyplora-lorentz-full"}
    matmuls = {method: code.count("extern_kernels.mm(") for method, code in codes.items()}
    assert matmuls["lora"] == matmuls["base"] + 2 * 5  # q, k, v, up, down
    for method in ("hyplora-lorentz", "hyplora-stereographic", "hyplora-lorentz-full"):
        assert matmuls[method] == matmuls["lora"]
        assert "torch.ops.hyplora" not in codes[method]
    # Written with sqrt(K) and s in every gate term, the branch made inductor compute K and s from the layer's
    # parameter in a kernel of its own, one per adapted layer (five here); in the dimensionless form
    # (functional._dimensionless_gate) the parameter's factors fuse into the kernels that use them.
    sys.path.insert(0, str(BENCHMARKS))
    from compiled_kernels import GENERATED  # the script's own pattern for a generated kernel's call

    generated = {method: len(GENERATED.findall(code[code.index("def call("):])) for method, code in codes.items()}
    for method in ("hyplora-lorentz", "hyplora-stereographic"):
        assert generated[method] < generated["lora"] + 5, generated


@pytest.mark.slow
def test_decode_step_smoke_run_times_the_compiled_step_of_each_method(tmp_path):
    out = tmp_path / "step.json"
    run_script("decode_step.py", "--tiny", "--methods", "lora,hyplora-lorentz", "--calls", "3", "--repeats", "2",
               "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [row["method"] for row in rows] == ["lora", "hyplora-lorentz"]
    for row in rows:
        assert len(row["issue_us"]) == len(row["step_us"]) == 2
        assert row["step_us_median"] == pytest.approx(statistics.median(row["step_us"]))
        assert row["host_profile"] and row["host_profile"][0]["own_us_per_step"] > 0
    with pytest.raises(AssertionError, match="unknown methods"):
        run_script("decode_step.py", "--tiny", "--methods", "lora,dora")


def _import_from_benchmarks(module: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return __import__(module)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_median_interval_holds_the_median_and_widens_with_noise():
    median_interval = _import_from_benchmarks("_common").median_interval
    assert median_interval([0.97] * 12) == (0.97, 0.97)
    quiet = [0.96, 0.962, 0.958, 0.961, 0.959, 0.963, 0.957, 0.96, 0.961, 0.959, 0.96, 0.962]
    noisy = [0.85, 1.05, 0.9, 1.1, 0.95, 0.8, 1.0, 0.97, 0.88, 1.02, 0.93, 0.99]
    for values in (quiet, noisy):
        low, high = median_interval(values)
        assert min(values) <= low <= statistics.median(values) <= high <= max(values)
        assert median_interval(values) == (low, high)  # seeded: the same values, the same interval
    assert (lambda i: i[1] - i[0])(median_interval(noisy)) > 10 * (lambda i: i[1] - i[0])(median_interval(quiet))
    with pytest.raises(ValueError):
        median_interval([])


def test_decode_verdict_is_undecided_when_the_run_cannot_tell():
    decode = _import_from_benchmarks("decode")

    def row(ratio, paired):
        return {"ratio_to_lora": ratio, "paired_ratio_to_lora_median": statistics.median(paired),
                "paired_ratio_to_lora_interval": decode.median_interval(paired)}

    assert decode.verdict(row(0.97, [0.968, 0.97, 0.972, 0.969, 0.971, 0.97, 0.973, 0.967])) == "PASS"
    assert decode.verdict(row(0.93, [0.928, 0.93, 0.932, 0.929, 0.931, 0.93, 0.933, 0.927])) == "FAIL"
    # both estimates above the target, but repeats that scatter from 0.85 to 1.1
    assert decode.verdict(row(0.97, [0.85, 1.05, 0.9, 1.1, 0.97, 0.8, 1.0, 0.97, 0.88, 1.02])) == "UNDECIDED"
    # a tight paired median above the target does not pass with the ratio of medians below it
    assert decode.verdict(row(0.94, [0.968, 0.97, 0.972, 0.969, 0.971, 0.97, 0.973, 0.967])) == "UNDECIDED"


def test_decode_verdicts_rejudges_a_saved_run_and_rejects_other_files(tmp_path):
    lora = [0.100, 0.101, 0.099, 0.100, 0.102, 0.100, 0.098, 0.101]
    steady = [t / 0.97 for t in lora]  # 0.97 of LoRA's speed in every repeat
    scattered = [t / r for t, r in zip(lora, [0.85, 1.05, 0.9, 1.1, 0.97, 0.8, 1.0, 0.97])]
    rows = [{"method": "lora", "seconds": lora, "ratio_to_lora": 1.0},
            {"method": "hyplora-lorentz", "seconds": steady,
             "ratio_to_lora": statistics.median(lora) / statistics.median(steady)},
            {"method": "hyplora-stereographic", "seconds": scattered,
             "ratio_to_lora": statistics.median(lora) / statistics.median(scattered)}]
    saved = tmp_path / "decode.json"
    saved.write_text(json.dumps({"cases": [{"model": "smollm2", "batch": 1, "rows": rows}]}))
    result = subprocess.run([sys.executable, str(BENCHMARKS / "decode_verdicts.py"), str(saved)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = {line.split(" | ")[2]: line for line in result.stdout.splitlines() if line.startswith("| decode.json")}
    assert lines["lorentz"].endswith("| PASS |") and lines["stereographic"].endswith("| UNDECIDED |")
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"results": []}))
    result = subprocess.run([sys.executable, str(BENCHMARKS / "decode_verdicts.py"), str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not a decode.py result" in result.stderr


def test_gpu_check_one_kernel_checks_run_small_in_the_interpreter():
    """gpu_check.py's check of the one kernel at a batched prefill's token counts (run on the GPU), here at small
    sizes on the CPU through Triton's interpreter, so that it cannot rot unnoticed between GPU sessions."""
    pytest.importorskip("triton")
    from hyplora.adapter import kernels
    if not kernels.INTERPRET:
        pytest.skip("Triton's interpreter is off (tests/conftest.py turns it on where there is no GPU)")
    gpu_check = _import_from_benchmarks("gpu_check")
    for variant in ("lorentz", "stereographic", "lorentz-full"):
        errors = gpu_check.check_narrow_one_kernel(variant, torch.device("cpu"), token_counts=(40,),
                                                   shapes=((24, 16), (40, 8)))
        assert len(errors) == 2 and max(errors.values()) < 1e-5, (variant, errors)
        # the wide-layer check, switched on inside it and off again after it
        errors = gpu_check.check_split_one_kernel(variant, torch.device("cpu"), token_counts=(1, 5),
                                                  shapes=((24, 40),), columns=16)
        assert len(errors) == 2 and max(errors.values()) < 1e-5, (variant, errors)
        assert kernels.FUSED_SPLIT_MAX_ROWS == 0
        # the two-pass form, switched on inside it and off again after it
        errors = gpu_check.check_two_pass(variant, torch.device("cpu"), token_counts=(1, 5), shapes=((40, 24),),
                                          columns=16)
        assert len(errors) == 2 and max(errors.values()) < 1e-5, (variant, errors)
        assert kernels.TWO_PASS_MAX_ROWS["lorentz"] == 0 and kernels.FUSED_MAX_ROWS == 256


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


def test_profiled_kernels_are_summed_by_kind():
    """Names as torch.profiler reported them on an H200 (benchmarks/results/*kernel-profile*.json)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from train_step import kernels_by_kind
    finally:
        sys.path.remove(str(BENCHMARKS))
    kernels = [
        {"name": "void cutlass::Kernel2<cutlass_80_simt_sgemm_64x64_8x5_nt_align1>(cutlass_80_simt_sgemm_64x64_8x5",
         "per_step": 48, "us_per_step": 262.5},
        {"name": "void cublasLt::splitKreduce_kernel<32, 16, int, float, float, float, float, false, float, float",
         "per_step": 80, "us_per_step": 174.5},
        {"name": "void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16",
         "per_step": 12, "us_per_step": 20.0},  # the bf16 base model's
        {"name": "sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize32x32x8_stage3", "per_step": 20, "us_per_step": 92.1},
        {"name": "_gate_forward_kernel", "per_step": 20, "us_per_step": 86.8},
        {"name": "triton_red_fused__to_copy__unsafe_view_add_gated_terms_linalg_vector_norm", "per_step": 4,
         "us_per_step": 254.5},
        {"name": "Memcpy DtoD (Device -> Device)", "per_step": 16, "us_per_step": 19.1},
        {"name": "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "per_step": 22, "us_per_step": 1887.5},
    ]
    kinds = kernels_by_kind(kernels)
    assert kinds["float32 GEMMs and split-K reductions"] == {"us_per_step": 262.5 + 174.5 + 92.1, "per_step": 148}
    assert kinds["HypLoRA Triton kernels"] == {"us_per_step": 86.8, "per_step": 20}
    assert kinds["inductor fused kernels"]["per_step"] == 4 and kinds["copies and memsets"]["per_step"] == 16
    assert kinds["other"] == {"us_per_step": 20.0 + 1887.5, "per_step": 34}


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
    # dynamo checks every guard before each call of a compiled model: per decoder layer HypLoRA's forward may not
    # cost noticeably more guards than LoRA's (it cost 14% more before its settings moved to a shared table)
    nodes = {(r["method"], r["layers"]): r["guard_nodes"] for r in rows}
    per_layer = {m: nodes[m, 2] - nodes[m, 1] for m in ("lora", "hyplora-lorentz")}
    assert 0 < per_layer["hyplora-lorentz"] <= 1.05 * per_layer["lora"], per_layer


@pytest.mark.slow
def test_kernel_registers_compiles_every_launch_for_sm90_without_a_gpu(tmp_path):
    """Static register and spill counts of every kernel launch (Triton's toolchain, no GPU). Guards against the
    spills that made the first lorentz-full backward kernel 40x slower than the gated one on an H200."""
    triton = pytest.importorskip("triton")
    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")):
        pytest.skip("this Triton has no NVIDIA toolchain")
    from hyplora.adapter import kernels

    out = tmp_path / "registers.json"
    run_script("kernel_registers.py", "--ranks", "32", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["kernel"], r["constants"]) for r in rows] == [(k, c) for k, c, _ in kernels.launch_configs(32)]
    assert all(0 < r["registers"] <= 255 for r in rows)
    assert all(r["stack_bytes"] == 0 for r in rows if r["kernel"].startswith(("_lorentz_full", "_add_fused")))
    assert max(r["stack_bytes"] for r in rows) <= 512  # the first lorentz-full backward kernel had 5 KB


def test_train_step_counts_every_hyplora_kernel_as_its_own():
    """Each kernel `hyplora.adapter.kernels` launches lands in train_step's "HypLoRA Triton kernels" row."""
    pytest.importorskip("triton")
    from hyplora.adapter import kernels

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from train_step import kernel_kind
    finally:
        sys.path.remove(str(BENCHMARKS))
    names = {name for name, _, _ in kernels.launch_configs(32)}
    assert names and all(kernel_kind(name) == "HypLoRA Triton kernels" for name in names)
    assert kernel_kind("triton_poi_fused_add_0") == "inductor fused kernels"


@pytest.mark.slow
def test_device_map_check_smoke_run_compares_the_split_model_for_each_variant(tmp_path):
    """device_map_check.py (a model split across two GPUs) with both "devices" the CPU, at tiny sizes: accelerate's
    hooks, the adapter placed after the split, every comparison and the JSON report (Triton's interpreter where it
    is on); without two GPUs its plain run exits 2."""
    from hyplora.adapter import kernels

    check = _import_from_benchmarks("device_map_check")
    out = tmp_path / "device_map.json"
    saved = (kernels.FUSED_MAX_ROWS, kernels.FUSED_NARROW_MAX_ROWS, os.environ.get("HYPLORA_TRITON"))
    assert check.main(["--cpu-smoke", "--json", str(out)]) == 0
    assert (kernels.FUSED_MAX_ROWS, kernels.FUSED_NARROW_MAX_ROWS, os.environ.get("HYPLORA_TRITON")) == saved
    report = json.loads(out.read_text())
    assert set(report["variants"]) == {"lorentz", "stereographic", "lorentz-full"} and not report["failed"]
    for variant, result in report["variants"].items():
        assert max(result["errors"].values()) <= report["tolerance"] and result["same_tokens"]
        assert result["placement"] == {"cpu": 10} and min(result["adapter_effect"].values()) >= check.MIN_EFFECT
        assert len(result["grad_errors"]) == 10 * 3  # A, B and the log-ratios of every adapted layer
        if report["triton"]:  # both no-grad paths and the training kernels ran (lorentz-full: two passes, 7 tokens)
            wide = "two passes" if variant == "lorentz-full" else "matmuls"
            assert {key.split(" @ ")[0] for key in result["launches"]} == {"one kernel", wide, "training"}
    if torch.cuda.device_count() < 2:
        assert check.main([]) == 2


def test_decode_keeps_the_garbage_collector_out_of_timed_calls():
    import gc

    decode = _import_from_benchmarks("decode")
    assert gc.isenabled()
    with pytest.raises(RuntimeError), decode.collector_between_repeats() as between_repeats:
        assert not gc.isenabled() and between_repeats is gc.collect
        raise RuntimeError("a failed repeat")
    assert gc.isenabled()  # back on after the repeats, even when one failed


def test_dispatch_overhead_times_the_layer_path_without_launching(tmp_path):
    out = tmp_path / "dispatch.json"
    run_script("dispatch_overhead.py", "--d", "64", "--rank", "8", "--calls", "20", "--repeats", "2",
               "--variants", "lorentz,lorentz-full", "--json", str(out))
    rows = {row["what"]: row for row in json.loads(out.read_text())["rows"]}
    for variant in ("lorentz", "lorentz-full"):  # the in-place path was taken (the script exits otherwise)
        for helpers in ("package", "Triton's helpers"):
            assert rows[f"{variant}: layer path to the launch of _add_fused_kernel, {helpers}"]["median_us"] > 0
    assert rows["kernels._cdiv(1000, 16)"]["median_us"] > 0
