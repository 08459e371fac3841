"""Training in several processes on CPU (gloo): DDP, FSDP2 and DeepSpeed ZeRO, and the configs/accelerate files.

Each test starts two processes (``accelerate launch`` or torchrun) as a subprocess; the per-process side is
``distributed_worker.py`` beside this file. The tiny random Llama trains HypLoRA for 4 steps on the built-in
synthetic data, with dropout 0 (dropout draws different random numbers per process), and is compared with one
process trained on the same global batch: 2 processes x batch 2 (or x batch 1 x 2 accumulation steps) against
1 process x batch 4. The data order is the same (accelerate hands the single-process batches out round-robin),
and the Trainer averages the loss over the tokens of all processes, so the results agree to float rounding.

FSDP on CPU: torch's FSDP2 (``fully_shard``) runs with gloo, and is tested directly on the HypLoRA layers. But
accelerate (1.15) turns FSDP on only for GPU-like distributed types: ``accelerate launch`` with fsdp.yaml on a
CPU machine silently trains with DDP. The FSDP test of ``hyplora.training.train`` therefore makes accelerate
report a GPU distributed type in the worker (test-only), so that its real FSDP2 path (sharding, sharded
checkpoints, gathered state dict) runs on CPU. FSDP1 is not tested: transformers 5 deprecates it, and it cannot
flatten a bf16 base with a float32 adapter into one FlatParameter (see configs/accelerate/fsdp.yaml).

DeepSpeed: its ZeRO-2/3 engine runs on CPU (its CPU accelerator, gloo) and is tested directly; accelerate turns
DeepSpeed off on CPU, so ``hyplora train`` under DeepSpeed needs GPUs. These tests are skipped where deepspeed
is not installed (it is not a dependency of hyplora).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyplora.training import read_log, resolve_config, train

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "accelerate"
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
TIMEOUT = 300

RUN = {
    "data": "builtin", "builtin_size": 40, "max_train_samples": 16, "dedup": False, "cutoff_len": 128,
    "method": "hyplora", "rank": 4, "lora_alpha": 8, "lora_dropout": 0.0, "learning_rate": 0.01,
    "warmup_steps": 0, "max_steps": 4, "save_steps": 100, "save_total_limit": 3, "logging_steps": 1, "seed": 7,
}
GLOBAL_BATCH = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    return env


def _run(cmd: list, cwd: Path, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{cmd[:6]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def _accelerate_launch(config: str, *args) -> list:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIGS / config,
            "--num_processes", "2", "--main_process_port", str(_free_port()), *args]


def _torchrun(*args) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def _adapter(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "adapter_model.safetensors"))


def _assert_close(got: dict, expected: dict, rtol=1e-5, atol=1e-6) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=rtol, atol=atol, msg=lambda m, key=key: f"{key}: {m}")


def _train_in_workers(launch: list, tmp_path: Path, overrides: dict, timeout: int = TIMEOUT,
                      **spec) -> tuple[Path, Path]:
    out, dumps = tmp_path / "run", tmp_path / "dumps"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"overrides": {**overrides, "output_dir": str(out)}, "dump_dir": str(dumps),
                                     **spec}), encoding="utf-8")
    _run([*launch, WORKER, "train", spec_path], cwd=tmp_path, timeout=timeout)
    return out, dumps


def _check_ranks_and_saved_adapter(out: Path, dumps: Path, single: Path) -> dict:
    """Both ranks hold the same adapter; rank 0 saved it; it equals the single-process adapter."""
    meta = [json.loads((dumps / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [m["rank"] for m in meta] == [0, 1]
    assert all(m["world_size"] == 2 and m["global_step"] == RUN["max_steps"] for m in meta)
    rank0, rank1 = load_file(str(dumps / "rank0.safetensors")), load_file(str(dumps / "rank1.safetensors"))
    assert sorted(rank0) == sorted(rank1) and len(rank0) == len(_adapter(single))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"ranks differ in {name}"
    saved = _adapter(out / "adapter")
    # the saved file holds exactly rank 0's trainable tensors (peft drops the adapter name from the keys)
    _assert_close(saved, {name.replace(".default", ""): t for name, t in rank0.items()}, rtol=0, atol=0)
    _assert_close(saved, _adapter(single))
    assert sum(k.endswith("lora_log_scales") and saved[k].shape == (2,) for k in saved) == 10
    # same files and same adapter config as the one-process run
    assert sorted(p.name for p in (out / "adapter").iterdir()) == sorted(p.name for p in single.iterdir())
    config, expected = (json.loads((d / "adapter_config.json").read_text()) for d in (out / "adapter", single))
    for c in (config, expected):  # peft writes a set: its order depends on the process's hash seed
        c["target_modules"] = sorted(c["target_modules"])
    assert config == expected
    assert config["peft_type"] == "HYPLORA"
    # rank 0 alone wrote the log: one line per step, with the curvature
    log = read_log(out / "train_log.jsonl")
    assert [e["step"] for e in log] == list(range(1, RUN["max_steps"] + 1))
    assert all(e["curvature"]["layers"] == 10 for e in log)
    return meta[0]


def _check_loads_on_cpu(adapter_dir: Path, single: Path, model_dir: str) -> None:
    """The adapter of a distributed run loads with hyplora.load_adapter on CPU and gives the single-process
    adapter's outputs (to float rounding)."""
    from peft import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from hyplora import load_adapter

    ids = torch.randint(0, 200, (2, 16), generator=torch.Generator().manual_seed(3))
    logits = []
    for directory in (adapter_dir, single):
        model = load_adapter(AutoModelForCausalLM.from_pretrained(model_dir), directory)
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
        _assert_close(get_peft_model_state_dict(model), _adapter(directory), rtol=0, atol=0)
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def single_process(tiny_model_dir, tmp_path_factory) -> Path:
    """The reference: one process, batch 4 (the global batch of the 2-process runs). Returns its adapter dir."""
    out = tmp_path_factory.mktemp("single") / "run"
    result = train(resolve_config({**RUN, "model": tiny_model_dir, "batch_size": GLOBAL_BATCH,
                                   "gradient_accumulation_steps": 1, "output_dir": str(out)}),
                   log=lambda *_: None, disable_tqdm=True)
    assert result.global_step == RUN["max_steps"]
    return result.adapter_dir


def test_ddp_accelerate_launch_matches_one_process(tiny_model_dir, single_process, tmp_path):
    """configs/accelerate/ddp.yaml: 2 processes x batch 2 end with identical adapters on both ranks, equal to
    one process x batch 4; the adapter rank 0 saved loads on CPU."""
    overrides = {**RUN, "model": tiny_model_dir, "batch_size": GLOBAL_BATCH // 2, "gradient_accumulation_steps": 1}
    out, dumps = _train_in_workers(_accelerate_launch("ddp.yaml"), tmp_path, overrides)
    meta = _check_ranks_and_saved_adapter(out, dumps, single_process)
    assert meta["distributed_type"] == "MULTI_CPU" and not meta["sharded"] and not meta["fsdp_units"]
    _check_loads_on_cpu(out / "adapter", single_process, tiny_model_dir)


def test_cli_under_torchrun_with_gradient_accumulation(tiny_model_dir, single_process, tmp_path):
    """``torchrun -m hyplora train``: 2 processes x batch 1 x 2 accumulation steps equal one process x batch 4;
    only rank 0 reports."""
    out = tmp_path / "run"
    flags = ["--model", tiny_model_dir, "--data", "builtin", "--builtin-size", "40", "--max-train-samples", "16",
             "--no-dedup", "--cutoff-len", "128", "--method", "hyplora", "--rank", "4", "--alpha", "8",
             "--dropout", "0", "--lr", "0.01", "--batch-size", "1", "--grad-accum", "2", "--warmup-steps", "0",
             "--max-steps", "4", "--save-steps", "100", "--seed", "7", "--output-dir", out, "--no-progress"]
    done = _run(_torchrun("-m", "hyplora", "train", *flags), cwd=tmp_path)
    assert done.stdout.count("finished 4 steps") == 1 and done.stdout.count("hyplora train:") == 1
    config = json.loads((out / "config.json").read_text())
    assert config["batch_size"] == 1 and config["gradient_accumulation_steps"] == 2
    _assert_close(_adapter(out / "adapter"), _adapter(single_process))
    assert [e["step"] for e in read_log(out / "train_log.jsonl")] == [1, 2, 3, 4]


def test_fsdp2_shards_hyplora_parameters_and_keeps_gradients(tmp_path):
    """torch FSDP2 over 2 processes: every trainable tensor (the 1-element float32 curvature and feature-scale
    parameters included) is sharded and gets the single-process gradient; compat="reference" keeps its gradient
    clip; a bf16 base with a float32 adapter shards and trains."""
    out = tmp_path / "fsdp2.json"
    _run(_torchrun(WORKER, "fsdp2-layer", out), cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["all_trainable_sharded"] and result["names_equal"]
    assert result["scalar_dtypes"] == ["torch.float32"] and len(result["scalar_names"]) == 6  # lora_log_scales
    assert result["scalar_grads_nonzero"]
    assert result["max_rel_error"] < 1e-4
    assert result["reference_clip_max_abs"] <= 0.01 + 1e-7  # unclipped, these gradients are ~1e4
    assert result["reference_clip_max_error"] < 1e-7
    assert result["mixed_dtypes"] == ["torch.bfloat16", "torch.float32"]
    assert result["mixed_loss_finite"] and result["mixed_grads_finite"]


def test_fsdp_accelerate_launch_matches_one_process(tiny_model_dir, single_process, tmp_path):
    """configs/accelerate/fsdp.yaml through accelerate's FSDP2 path (forced on CPU, see the module docstring):
    the adapter is sharded during training, checkpoints are written from the sharded model, and the saved adapter
    is the single-process one, in the same format, and loads on CPU."""
    overrides = {**RUN, "model": tiny_model_dir, "batch_size": GLOBAL_BATCH // 2, "gradient_accumulation_steps": 1,
                 "save_steps": 2}
    # (a short timeout: a collective entered by one rank only would hang)
    out, dumps = _train_in_workers(_accelerate_launch("fsdp.yaml"), tmp_path, overrides, timeout=120,
                                   force_fsdp_on_cpu=True)
    meta = _check_ranks_and_saved_adapter(out, dumps, single_process)
    assert meta["distributed_type"] == "FSDP" and meta["sharded"]
    assert "FSDPLlamaDecoderLayer" in meta["fsdp_units"]  # one unit per decoder layer, from _no_split_modules
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    _check_loads_on_cpu(out / "adapter", single_process, tiny_model_dir)


def test_deepspeed_zero_engine_matches_one_process(tmp_path):
    """DeepSpeed ZeRO-2 and ZeRO-3 (2 processes): one AdamW step over HypLoRA equals the step in one process;
    ZeRO-3 gathers the adapter's tensors, the 1-element ones included, inside the layer's forward."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (optional: pip install deepspeed)")
    out = tmp_path / "zero.json"
    _run(_torchrun(WORKER, "zero", out), cwd=tmp_path)
    result = json.loads(out.read_text())
    for stage in ("stage2", "stage3"):
        assert result[stage]["names_equal"] and result[stage]["scalars"] == 6
        assert result[stage]["max_step"] > 1e-3  # the step moved the parameters
        assert result[stage]["max_error"] < 1e-6, result


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_launch(tmp_path, stage):
    """configs/accelerate/deepspeed-zero{2,3}.yaml are read by accelerate launch and reach the processes."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (optional: pip install deepspeed)")
    _run(_accelerate_launch(f"deepspeed-zero{stage}.yaml", WORKER, "launch-env", tmp_path), cwd=tmp_path)
    envs = [json.loads((tmp_path / f"env{r}.json").read_text()) for r in (0, 1)]
    for env in envs:
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["WORLD_SIZE"] == "2"
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(stage)
        assert env["ACCELERATE_MIXED_PRECISION"] == "no"
        assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env  # left to hyplora train's --grad-accum
    if stage == 3:
        assert envs[0]["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"


# ------------------------------------------------------------------------------- benchmarks/multi_gpu.py
BENCHMARK = ROOT / "benchmarks" / "multi_gpu.py"


def _math_data(root: Path) -> Path:
    """A small stand-in for the math training set (GSM8K + MAWPS train files) in the shared data format."""
    (root / "train").mkdir(parents=True)
    with open(root / "train" / "gsm8k_train.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"question": f"Tom has {i} apples and buys 3 more. How many apples has he?",
                                     "answer": f"He has {i} + 3 = <<{i}+3={i + 3}>>{i + 3} apples.\n#### {i + 3}"}) + "\n" for i in range(40))
    (root / "train" / "mawps_raw.json").write_text(json.dumps([
        {"id": i, "original_text": f"Sara had {i} pens and lost 2. How many pens are left?",
         "segmented_text": f"Sara had {i} pens and lost 2 . How many pens are left ?", "equation": f"X=({i}.0-2.0)",
         "ans": float(i - 2)} for i in range(2, 42)]), encoding="utf-8")
    return root


def _benchmark_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("multi_gpu_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_multi_gpu_benchmark_plan_and_argument_errors(tiny_model_dir, tmp_path, capsys):
    main = _benchmark_main()
    data = _math_data(tmp_path / "data")
    common = ["--model", tiny_model_dir, "--data-dir", str(data), "--out-dir", str(tmp_path / "out")]
    assert main([*common, "--dry-run", "--gpus", "4", "--steps", "50", "--warmup", "5"]) == 0
    printed = capsys.readouterr().out
    assert [line.split("]")[0] for line in printed.splitlines() if line.startswith("[")] == ["[1gpu", "[ddp", "[fsdp"]
    assert "CUDA_VISIBLE_DEVICES=" in printed
    for config in ("ddp.yaml", "fsdp.yaml"):
        assert f"--config_file {CONFIGS / config} --num_processes 4" in printed
    assert "global batch 16\n" in printed and "global batch 64\n" in printed
    assert not (tmp_path / "out").exists()  # a dry run writes nothing

    for argv, message in [
        ([*common[:2], "--data-dir", str(data)], "missing --out-dir"),
        ([*common, "--runs", "1gpu,zero3"], "unknown run(s) zero3"),
        ([*common, "--steps", "10", "--warmup", "9"], "--warmup (9) must be below"),
        ([*common, "--gpus", "1"], "--gpus must be >= 2"),
        (["--model", str(tmp_path / "nope.gguf"), *common[2:]], "no such file or directory"),
        ([*common[:2], "--data-dir", str(tmp_path), *common[4:]], "lacks train/gsm8k_train.jsonl"),
        ([*common, "--dedup"], "lacks test"),
    ]:
        assert main([*argv, "--dry-run"]) == 2, argv
        assert message in capsys.readouterr().err
    if torch.cuda.device_count() < 2:
        assert main(common) == 2
        assert "need 2 GPU(s)" in capsys.readouterr().err


def test_multi_gpu_benchmark_cpu_smoke(tiny_model_dir, tmp_path):
    """The whole benchmark on the CPU (one process, then DDP over 2 gloo processes): it times the steps, reloads
    each adapter on the CPU and writes its JSON and markdown reports."""
    out = tmp_path / "out"
    _run([sys.executable, BENCHMARK, "--model", tiny_model_dir, "--data-dir", _math_data(tmp_path / "data"),
          "--out-dir", out, "--cpu-smoke-test", "--runs", "1gpu,ddp", "--steps", "6", "--warmup", "1",
          "--batch-size", "2", "--cutoff-len", "128", "--precision", "fp32"], cwd=tmp_path)
    report = json.loads((out / "multi_gpu.json").read_text())
    runs = {r["run"]: r for r in report["runs"]}
    assert sorted(runs) == ["1gpu", "ddp"]
    assert runs["1gpu"]["distributed_type"] == "NO" and runs["ddp"]["distributed_type"] == "MULTI_CPU"
    assert runs["1gpu"]["throughput"]["global_batch"] == 2 and runs["ddp"]["throughput"]["global_batch"] == 4
    for r in runs.values():
        assert r["returncode"] == 0 and r["throughput"]["timed_steps"] == 4 and r["throughput"]["samples_per_s"] > 0
        assert r["reload"]["ok"] and r["reload"]["tensors_equal_file"] and r["reload"]["hyplora_scalars"] == 10
    assert runs["ddp"]["reload"]["same_format_as_1gpu"] and runs["ddp"]["scaling"] > 0
    table = (out / "multi_gpu.md").read_text()
    assert "| ddp | 2 | MULTI_CPU | 4 |" in table and "1.00x (baseline)" in table
    with pytest.raises(subprocess.CalledProcessError):  # a second run into the same directory is refused
        subprocess.run([sys.executable, str(BENCHMARK), "--model", tiny_model_dir, "--data-dir",
                        str(tmp_path / "data"), "--out-dir", str(out), "--dry-run"], check=True, capture_output=True)

    # a run that outlasts --run-timeout is stopped with all its processes and reported as failed (exit status 1)
    import psutil

    late = tmp_path / "late"
    done = subprocess.run([sys.executable, str(BENCHMARK), "--model", tiny_model_dir, "--data-dir",
                           str(tmp_path / "data"), "--out-dir", str(late), "--cpu-smoke-test", "--runs", "ddp",
                           "--steps", "6", "--warmup", "1", "--run-timeout", "1"], env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    (run,) = json.loads((late / "multi_gpu.json").read_text())["runs"]
    assert run["error"].startswith("stopped after 1 s")
    spec = str(late / "ddp.spec.json")
    assert not [p for p in psutil.process_iter(["cmdline"]) if spec in (p.info["cmdline"] or [])]
