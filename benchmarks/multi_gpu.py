"""Multi-GPU training: one GPU vs DDP vs FSDP2 on N GPUs (default 2), HypLoRA on SmolLM2-135M, math training set.

Each run is ``hyplora.training.train`` (what ``hyplora train`` runs) for a fixed number of optimizer steps with
the same per-GPU batch, started as its own process group:

    1gpu   python benchmarks/multi_gpu.py --worker SPEC                  (CUDA_VISIBLE_DEVICES = the first GPU)
    ddp    accelerate launch --config_file configs/accelerate/ddp.yaml  --num_processes N ... --worker SPEC
    fsdp   accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes N ... --worker SPEC

A callback notes the end of every optimizer step on rank 0 (after a CUDA synchronize); throughput is the global
batch (per-GPU batch x accumulation x processes) times the steps after the first --warmup + 1, over their time. The scaling
ratio of a run is its samples/s over the one-GPU run's (the issue's target: >= 1.8 on 2 GPUs). After each run
the saved adapter is loaded with ``hyplora.load_adapter`` on the CPU (float32): its tensors must equal the
files, its files and config must match the one-GPU adapter's, and its loss on 16 fixed training examples is
reported beside the base model's.

Writes ``<out-dir>/multi_gpu.json`` and ``<out-dir>/multi_gpu.md`` (a table), each run's directory
(``<out-dir>/<run>/``: adapter, logs, config) and its console output (``<out-dir>/<run>.log``). A run that
fails is recorded with the end of its log and the others still run; the exit status is then 1.

    python benchmarks/multi_gpu.py --model MODEL --data-dir DATA --out-dir OUT          # on a machine with 2 GPUs
    python benchmarks/multi_gpu.py --model MODEL --data-dir DATA --out-dir OUT --dry-run  # print the plan only

MODEL is what ``hyplora train --model`` takes: the embedded GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``;
loading it needs the ``gguf`` package) or a Hugging Face model directory. DATA holds ``train/gsm8k_train.jsonl``
and ``train/mawps_raw.json`` (the math mix; no test sets are needed: deduplication is off unless --dedup).
On a machine that has neither, the caller carries them: docs/multi-gpu.md says how.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from hyplora.errors import HypLoraUserError  # noqa: E402

RUNS = ("1gpu", "ddp", "fsdp")
CONFIGS = {"ddp": ROOT / "configs" / "accelerate" / "ddp.yaml", "fsdp": ROOT / "configs" / "accelerate" / "fsdp.yaml"}
MATH_FILES = ("train/gsm8k_train.jsonl", "train/mawps_raw.json")
TARGET_SCALING = 1.8
TIMING_NAME = "timing.rank{rank}.json"


# ------------------------------------------------------------------------------------------------ arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="multi_gpu.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="model for hyplora train --model: a .gguf file or a model directory")
    parser.add_argument("--data-dir", help="data directory holding train/gsm8k_train.jsonl and train/mawps_raw.json")
    parser.add_argument("--out-dir", help="where runs, logs and the report go (must not hold a report yet)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    parser.add_argument("--gpus", type=int, default=2, help="GPUs for the ddp and fsdp runs (default 2)")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run (default 150)")
    parser.add_argument("--warmup", type=int, default=20, help="first steps left out of the timing (default 20)")
    parser.add_argument("--batch-size", type=int, default=16, help="per-GPU micro batch (default 16)")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    parser.add_argument("--cutoff-len", type=int, default=256, help="tokens per example (default 256)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="default bf16")
    parser.add_argument("--recipe", default="smollm2-math-hyplora", help="hyplora recipe (default smollm2-math-hyplora)")
    parser.add_argument("--dedup", action="store_true", help="deduplicate against the test sets (needs DATA/test)")
    parser.add_argument("--max-train-samples", type=int, help="train on a seeded slice of the math set (default all)")
    parser.add_argument("--cpu-smoke-test", action="store_true",
                        help="run on the CPU (gloo; fsdp then runs as DDP): checks the script, the numbers mean nothing")
    parser.add_argument("--run-timeout", type=int, default=250,
                        help="seconds one run may take before its processes are killed (default 250)")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments and print the plan; run nothing")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)  # internal: one training process
    args = parser.parse_args(argv)
    if args.worker:
        return args
    missing = [flag for flag, value in (("--model", args.model), ("--data-dir", args.data_dir),
                                         ("--out-dir", args.out_dir)) if not value]
    if missing:
        raise HypLoraUserError(f"missing {', '.join(missing)}")
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        raise HypLoraUserError(f"unknown run(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(RUNS)}")
    args.runs = [r for r in RUNS if r in runs]  # the one-GPU baseline first
    for flag, value, least in (("--gpus", args.gpus, 2), ("--steps", args.steps, 2), ("--batch-size", args.batch_size, 1),
                               ("--grad-accum", args.grad_accum, 1), ("--cutoff-len", args.cutoff_len, 2),
                               ("--warmup", args.warmup, 0), ("--run-timeout", args.run_timeout, 1)):
        if value < least:
            raise HypLoraUserError(f"{flag} must be >= {least}, got {value}")
    if args.max_train_samples is not None and args.max_train_samples < 1:
        raise HypLoraUserError(f"--max-train-samples must be >= 1, got {args.max_train_samples}")
    if args.warmup >= args.steps - 1:
        raise HypLoraUserError(f"--warmup ({args.warmup}) must be below --steps - 1 ({args.steps - 1})")
    if not Path(args.model).expanduser().exists():
        raise HypLoraUserError(f"--model {args.model}: no such file or directory (a .gguf file or a model directory)")
    data = Path(args.data_dir).expanduser()
    absent = [name for name in MATH_FILES + (("test",) if args.dedup else ()) if not (data / name).exists()]
    if absent:
        raise HypLoraUserError(f"--data-dir {data} lacks {', '.join(absent)} (the math training set"
                               f"{' and the test sets for --dedup' if args.dedup else ''})")
    out = Path(args.out_dir).expanduser()
    if (out / "multi_gpu.json").exists():
        raise HypLoraUserError(f"{out} already holds a report (multi_gpu.json); choose another --out-dir")
    return args


def train_overrides(args, run: str, out: Path) -> dict:
    """hyplora TrainConfig settings of one run (recipe values, then these)."""
    return {
        "recipe": args.recipe,
        "model": str(Path(args.model).expanduser().resolve()),
        "data": "math",
        "data_dir": str(Path(args.data_dir).expanduser().resolve()),
        "dedup": bool(args.dedup),
        "output_dir": str(out / run),
        "max_steps": args.steps,
        "warmup_steps": min(10, args.steps // 10),
        "batch_size": args.batch_size,
        "gradient_accumulation_steps": args.grad_accum,
        "cutoff_len": args.cutoff_len,
        "precision": args.precision,
        "logging_steps": min(10, args.steps),  # the log reads the curvature (collectives under FSDP): not every step
        "save_steps": args.steps * 10,  # no checkpoint inside the timed steps; the adapter is saved at the end
        "max_train_samples": args.max_train_samples,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(args, run: str, spec: Path) -> list[str]:
    worker = [str(Path(__file__).resolve()), "--worker", str(spec)]
    if run == "1gpu":
        return [sys.executable, *worker]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS[run]),
            "--num_processes", str(args.gpus), "--main_process_port", str(_free_port()), *worker]


def _first_gpu() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def plan(args) -> list[dict]:
    out = Path(args.out_dir).expanduser().resolve()
    steps = []
    for run in args.runs:
        spec = out / f"{run}.spec.json"
        processes = 1 if run == "1gpu" else args.gpus
        steps.append({
            "run": run,
            "processes": processes,
            "global_batch": args.batch_size * args.grad_accum * processes,
            "spec_path": str(spec),
            "spec": {"overrides": train_overrides(args, run, out), "warmup": args.warmup},
            "command": launch_command(args, run, spec),
            "env": {"CUDA_VISIBLE_DEVICES": _first_gpu()} if run == "1gpu" and not args.cpu_smoke_test else {},
        })
    return steps


# ------------------------------------------------------------------------------------------------ worker
def worker(spec_path: str) -> None:
    """One training process: hyplora.training.train with a step timer; every rank writes its timing file."""
    import torch
    from transformers import TrainerCallback

    from hyplora.training import resolve_config, train

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    out = Path(spec["overrides"]["output_dir"])

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

        def on_train_end(self, args, state, control, model=None, **kwargs):
            from accelerate.state import AcceleratorState
            from torch.distributed.tensor import DTensor

            sharded = any(isinstance(p, DTensor) for p in model.parameters()) if model is not None else False
            payload = {
                "rank": rank,
                "world_size": args.world_size,
                "distributed_type": AcceleratorState().distributed_type.value,
                "sharded": sharded,
                "per_device_batch": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "global_step": state.global_step,
                "step_end_times": self.times,
                "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if torch.cuda.is_available() else None,
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            }
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / f".{TIMING_NAME.format(rank=rank)}.tmp"
            tmp.write_text(json.dumps(payload), encoding="utf-8")
            os.replace(tmp, out / TIMING_NAME.format(rank=rank))

    train(resolve_config(spec["overrides"]), callbacks=[StepTimer()], disable_tqdm=True,
          log=print if rank == 0 else (lambda *_: None))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------------ results
def throughput(timing: dict, warmup: int) -> dict:
    times = timing["step_end_times"]
    if len(times) <= warmup + 1:
        raise ValueError(f"only {len(times)} steps were timed")
    global_batch = timing["per_device_batch"] * timing["gradient_accumulation_steps"] * timing["world_size"]
    timed_steps = len(times) - 1 - warmup
    seconds = times[-1] - times[warmup]
    durations = [b - a for a, b in zip(times[warmup:-1], times[warmup + 1:])]
    # the median step shows the steady state; the mean (samples_per_s) also counts logging and other slow steps
    return {"global_batch": global_batch, "timed_steps": timed_steps, "seconds": seconds,
            "samples_per_s": global_batch * timed_steps / seconds, "steps_per_s": timed_steps / seconds,
            "median_step_ms": 1000 * statistics.median(durations), "max_step_ms": 1000 * max(durations)}


def _eval_examples(args, tokenizer, count: int = 16):
    from hyplora.data import load_training_data, tokenize_records
    from hyplora.data.tokenization import CausalLMCollator

    data = load_training_data("math", Path(args.data_dir).expanduser(), dedup=False, max_samples=count, seed=1234)
    examples = tokenize_records(data.records, tokenizer, cutoff_len=args.cutoff_len).examples
    return CausalLMCollator(tokenizer.pad_token_id)(examples)


def reload_check(adapter_dir: Path, base_model, batch, reference_dir: Path | None) -> dict:
    """Load the adapter on the CPU; its tensors equal the file; files and config match the one-GPU adapter."""
    import copy

    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from hyplora import load_adapter

    model = load_adapter(copy.deepcopy(base_model), adapter_dir)
    saved = load_file(str(adapter_dir / "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(model)
    tensors_equal = sorted(saved) == sorted(loaded) and all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)
    with torch.no_grad():
        loss = float(model(**batch).loss)
    result = {"tensors_equal_file": tensors_equal, "tensors": len(saved),
              "hyplora_scalars": sum(any(kind in k for kind in ("lora_log_scales", "lora_curvature",
                                                                  "lora_feature_scale")) for k in saved),
              "eval_loss": loss}
    if reference_dir is not None:
        def config(d):
            c = json.loads((d / "adapter_config.json").read_text(encoding="utf-8"))
            c["target_modules"] = sorted(c["target_modules"])
            return c

        reference = load_file(str(reference_dir / "adapter_model.safetensors"))
        result["same_format_as_1gpu"] = (
            sorted(p.name for p in adapter_dir.iterdir()) == sorted(p.name for p in reference_dir.iterdir())
            and config(adapter_dir) == config(reference_dir)
            and {k: (v.shape, v.dtype) for k, v in saved.items()} == {k: (v.shape, v.dtype) for k, v in reference.items()}
        )
    result["ok"] = tensors_equal and result.get("same_format_as_1gpu", True) and math.isfinite(loss)
    return result


def markdown(report: dict) -> str:
    lines = [
        f"# Multi-GPU HypLoRA training ({report['model_name']}, math training set)", "",
        (f"{report['device']}; {report['steps']} steps per run, the first {report['warmup'] + 1} untimed; per-GPU "
         f"batch {report['batch_size']} x {report['grad_accum']} accumulation, cutoff {report['cutoff_len']}, "
         f"{report['precision']}; {report['versions']}."), "",
        f"Eval loss: 16 fixed training examples on the CPU; the base model's is {report['base_eval_loss']:.4f}.", "",
        ("| run | GPUs | accelerate mode | global batch | samples/s | scaling vs 1 GPU | median step ms (max) "
         "| peak GiB/GPU | final loss | eval loss | reload |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        if r.get("error"):
            error = r["error"].replace("|", "/")
            lines.append(f"| {r['run']} | {r['processes']} | | {r['global_batch']} | failed: {error} | | | | | | |")
            continue
        t, check = r["throughput"], r.get("reload", {})
        scaling = (f"{r['scaling']:.2f}x (median step: {r['scaling_median']:.2f}x)" if r.get("scaling")
                   else "1.00x (baseline)" if r["run"] == "1gpu" else "n/a")
        peak = max((m for m in r["peak_memory_gib"] if m is not None), default=None)
        lines.append(
            f"| {r['run']} | {r['processes']} | {r['distributed_type']}{' (sharded)' if r['sharded'] else ''} | "
            f"{t['global_batch']} | {t['samples_per_s']:.1f} | {scaling} | "
            f"{t['median_step_ms']:.0f} ({t['max_step_ms']:.0f}) | "
            f"{'n/a' if peak is None else f'{peak:.2f}'} | {_number(r.get('final_loss'))} | "
            f"{check.get('eval_loss', float('nan')):.4f} | {'ok' if check.get('ok') else 'FAILED'} |"
        )
    lines += ["", (f"Scaling target: >= {TARGET_SCALING}x samples/s on {report['gpus']} GPUs "
                   "(same per-GPU batch, so the global batch grows with the GPUs).")]
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _run_logged(command: list[str], log_path: Path, env: dict, timeout: int) -> int | None:
    """Run a launcher with its output in ``log_path``; on timeout end it and every process under it (torchrun
    starts each worker in a session of its own, and they hold GPUs) and return None. A distributed run whose
    ranks disagree can hang instead of failing."""
    import psutil  # a dependency of accelerate

    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                tree = []
            for process in tree:
                try:
                    process.terminate()
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(tree, timeout=15)
            for process in alive:
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait()
            log.write(f"\n[multi_gpu.py] stopped after {timeout} s\n")
            return None


def run_all(args) -> int:
    import platform

    import torch

    steps = plan(args)
    if args.dry_run:
        for step in steps:
            env = " ".join(f"{k}={v}" for k, v in step["env"].items())
            print(f"[{step['run']}] {step['processes']} process(es), global batch {step['global_batch']}")
            print(f"  spec {step['spec_path']}: {json.dumps(step['spec'])}")
            print(f"  {env + ' ' if env else ''}{' '.join(step['command'])}")
        return 0
    available = torch.cuda.device_count()
    needed = max(step["processes"] for step in steps)
    if available < needed and not args.cpu_smoke_test:
        raise HypLoraUserError(f"these runs need {needed} GPU(s); this machine has {available}")

    out = Path(args.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for step in steps:
        run, run_dir = step["run"], out / step["run"]
        if run_dir.exists():
            raise HypLoraUserError(f"{run_dir} exists; choose another --out-dir")
        Path(step["spec_path"]).write_text(json.dumps(step["spec"], indent=2), encoding="utf-8")
        print(f"[{run}] {' '.join(step['command'])}", flush=True)
        started = time.time()
        returncode = _run_logged(step["command"], out / f"{run}.log", {**os.environ, **step["env"]}, args.run_timeout)
        result = {"run": run, "processes": step["processes"], "global_batch": step["global_batch"],
                  "returncode": returncode, "wall_s": round(time.time() - started, 1)}
        timings = [json.loads(p.read_text()) for p in sorted(run_dir.glob("timing.rank*.json"))]
        if returncode != 0 or len(timings) != step["processes"]:
            tail = (out / f"{run}.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            status = f"stopped after {args.run_timeout} s" if returncode is None else f"exit {returncode}"
            result["error"] = f"{status}, {len(timings)} timing file(s); log ends: " + " / ".join(tail)
        else:
            rank0 = next(t for t in timings if t["rank"] == 0)
            result.update(throughput=throughput(rank0, args.warmup), distributed_type=rank0["distributed_type"],
                          sharded=rank0["sharded"], device=rank0["device"],
                          peak_memory_gib=[t["peak_memory_gib"] for t in sorted(timings, key=lambda t: t["rank"])])
            summary = json.loads((run_dir / "summary.json").read_text())
            result["final_loss"] = summary.get("final_loss")
        print(f"[{run}] " + (result.get("error") or f"{result['throughput']['samples_per_s']:.1f} samples/s"),
              flush=True)
        results.append(result)

    base = next((r for r in results if r["run"] == "1gpu" and not r.get("error")), None)
    for r in results:
        if base is not None and not r.get("error") and r is not base:
            r["scaling"] = r["throughput"]["samples_per_s"] / base["throughput"]["samples_per_s"]
            r["meets_target"] = r["scaling"] >= TARGET_SCALING
            # the same from median step times: insensitive to a single slow step in either run
            t, t0 = r["throughput"], base["throughput"]
            r["scaling_median"] = ((t["global_batch"] / t["median_step_ms"])
                                   / (t0["global_batch"] / t0["median_step_ms"]))

    # reload every saved adapter on the CPU, against the base model (float32) on 16 fixed training examples
    from hyplora.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    base_model = load_model(args.model).eval()
    batch = _eval_examples(args, tokenizer)
    with torch.no_grad():
        base_loss = float(base_model(**batch).loss)
    reference_dir = out / "1gpu" / "adapter" if base is not None else None
    for r in results:
        if not r.get("error"):
            r["reload"] = reload_check(out / r["run"] / "adapter", base_model, batch,
                                       None if r["run"] == "1gpu" else reference_dir)

    import accelerate
    import peft
    import transformers

    report = {
        "model": args.model, "model_name": Path(args.model).name, "data_dir": args.data_dir,
        "device": next((r["device"] for r in results if r.get("device")), "n/a"), "gpus": args.gpus,
        "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
        "cutoff_len": args.cutoff_len, "precision": args.precision, "recipe": args.recipe, "dedup": args.dedup,
        "base_eval_loss": base_loss, "target_scaling": TARGET_SCALING, "runs": results,
        "versions": (f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
                     f"accelerate {accelerate.__version__}, python {platform.python_version()}"),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    _write_atomic(out / "multi_gpu.json", json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    _write_atomic(out / "multi_gpu.md", table)
    print(table)
    failed = [r["run"] for r in results if r.get("error") or not r.get("reload", {}).get("ok")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.worker:
            worker(args.worker)
            return 0
        return run_all(args)
    except HypLoraUserError as exc:
        print(f"multi_gpu.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
