"""Resume equivalence: a run killed mid-way and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hyplora.errors import HypLoraUserError
from hyplora.training import last_checkpoint, read_log, resolve_config, train


class Crash(RuntimeError):
    pass


class CrashAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"simulated crash at step {self.step}")


def _train(overrides, **kwargs):
    return train(resolve_config(overrides), log=lambda *_: None, disable_tqdm=True, **kwargs)


@pytest.mark.parametrize("method", ["lora", "hyplora"])
def test_resume_after_crash_matches_uninterrupted(small_run, tmp_path, method):
    run = {**small_run, "method": method}  # dropout 0.05: the RNG state must be restored too
    full = _train({**run, "output_dir": str(tmp_path / "full")})

    crashed_dir = tmp_path / "crashed"
    with pytest.raises(Crash):
        _train({**run, "output_dir": str(crashed_dir)}, callbacks=[CrashAtStep(6)])
    assert last_checkpoint(crashed_dir).name == "checkpoint-4"
    assert [e["step"] for e in read_log(crashed_dir / "train_log.jsonl")] == list(range(1, 6))

    resumed = _train({**run, "output_dir": str(crashed_dir)}, resume=True)
    assert resumed.resumed_from.endswith("checkpoint-4")
    full_log, resumed_log = read_log(full.log_path), read_log(resumed.log_path)
    assert [e["step"] for e in resumed_log] == list(range(1, 9))  # step 5 of the crashed run was replaced, not repeated
    for a, b in zip(full_log, resumed_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["lr"] == pytest.approx(b["lr"])
    assert resumed.final_loss == pytest.approx(full.final_loss, rel=1e-5)
    wa = load_file(str(full.adapter_dir / "adapter_model.safetensors"))
    wb = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)


def test_half_written_checkpoint_is_ignored(small_run, tmp_path):
    out = tmp_path / "run"
    _train({**small_run, "max_steps": 4, "output_dir": str(out)})
    # a crash while saving leaves a staging folder and never a partial checkpoint-N; even if something
    # else left a checkpoint folder without a trainer state, resume must not pick it
    (out / "checkpoints" / ".staging" / "checkpoint-6").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-7").mkdir()
    assert last_checkpoint(out).name == "checkpoint-4"


def test_resume_errors(small_run, tmp_path):
    with pytest.raises(HypLoraUserError, match="nothing to resume"):
        _train({**small_run, "output_dir": str(tmp_path / "empty")}, resume=True)
    out = tmp_path / "done"
    _train({**small_run, "max_steps": 2, "output_dir": str(out)})
    with pytest.raises(HypLoraUserError, match="already holds a training run"):
        _train({**small_run, "max_steps": 2, "output_dir": str(out)})
    shutil.rmtree(out / "checkpoints")
    with pytest.raises(HypLoraUserError, match="nothing to resume"):
        _train({**small_run, "max_steps": 2, "output_dir": str(out)}, resume=True)
    # a run that failed before its first checkpoint (only config.json and data_stats.json) may be started again
    failed = tmp_path / "failed"
    with pytest.raises(HypLoraUserError, match="not found in the model"):
        _train({**small_run, "target_modules": ["nope"], "output_dir": str(failed)})
    assert (failed / "config.json").is_file()
    assert _train({**small_run, "max_steps": 1, "output_dir": str(failed)}).global_step == 1


def test_sigkill_mid_run_then_resume(small_run, tmp_path):
    """A real crash: the CLI process is SIGKILLed after its first checkpoint, then resumed with --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = {**small_run, "max_steps": 40, "save_steps": 10}
    full = _train({**run, "output_dir": str(tmp_path / "full")})

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hyplora", "train", "--model", run["model"], "--data", "builtin",
           "--builtin-size", "40", "--max-train-samples", "16", "--no-dedup", "--cutoff-len", "128",
           "--method", "lora", "--rank", "4", "--alpha", "8", "--dropout", "0.05", "--lr", "0.01",
           "--batch-size", "4", "--grad-accum", "1", "--warmup-steps", "0", "--max-steps", "40",
           "--save-steps", "10", "--save-total-limit", "3", "--seed", "7", "--output-dir", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and last_checkpoint(out) is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed mid-way")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = last_checkpoint(out)
    assert killed_at is not None and int(killed_at.name.split("-")[1]) < 40
    assert not (out / "summary.json").exists()

    done = subprocess.run([sys.executable, "-m", "hyplora", "train", "--output-dir", str(out), "--resume",
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    full_log, resumed_log = read_log(full.log_path), read_log(out / "train_log.jsonl")
    assert [e["step"] for e in resumed_log] == list(range(1, 41))
    assert resumed_log[-1]["loss"] == pytest.approx(full_log[-1]["loss"], rel=1e-5)
    wa = load_file(str(full.adapter_dir / "adapter_model.safetensors"))
    wb = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)
