"""`train(config)`: data -> tokenization -> model + adapter -> transformers' Trainer -> output directory.

Output directory layout::

    config.json         the resolved TrainConfig plus library versions (everything needed to reproduce)
    data_stats.json     loading, deduplication, slicing and tokenization statistics
    train_log.jsonl     one JSON object per logging step: step, epoch, loss, lr, grad_norm, curvature
    loss_curve.png      loss (and curvature, for HypLoRA) against the step
    adapter/            the trained adapter in PEFT format (``save_pretrained``)
    summary.json        final step, final loss, runtime, paths
    checkpoints/        Trainer checkpoints ``checkpoint-N`` (each one renamed into place when complete)

Checkpoints are written into ``checkpoints/.staging/`` and renamed to ``checkpoints/checkpoint-N`` only once
complete, so a crash never leaves a half-written ``checkpoint-N``; ``resume`` continues from the highest one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import HypLoraUserError
from .adapters import attach_adapter, curvature_summary
from .config import TrainConfig, write_json_atomic

CONFIG_NAME = "config.json"
DATA_STATS_NAME = "data_stats.json"
LOG_NAME = "train_log.jsonl"
PLOT_NAME = "loss_curve.png"
ADAPTER_DIR = "adapter"
SUMMARY_NAME = "summary.json"
CHECKPOINT_DIR = "checkpoints"
STAGING_DIR = ".staging"


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    log_path: Path
    plot_path: Path | None
    global_step: int
    final_loss: float | None
    runtime_s: float
    resumed_from: str | None = None


def _is_main_process() -> bool:
    """Rank 0 of a distributed launch (torchrun / accelerate launch set RANK), or the only process."""
    rank = os.environ.get("RANK")
    if rank is not None and rank.strip().isdigit():
        return int(rank) == 0
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:  # accelerate not initialised in an unusual environment: single process
        return True


def _versions() -> dict:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("hyplora", "torch", "transformers", "peft", "accelerate"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _unmark_dequantized_gguf(model) -> None:
    """GGUF checkpoints are dequantized to ordinary float ``nn.Linear`` weights on load, but transformers still
    marks the model as "quantized with GGUF", and Trainer refuses to train such a model. The weights are plain
    floats, so the marker is dropped (only for GGUF; real quantization methods are left alone)."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or str(getattr(method, "value", method)).lower() != "gguf":
        return
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


# ---------------------------------------------------------------------------------------------- checkpoints
def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The highest complete ``checkpoints/checkpoint-N`` (one with a trainer state), or None."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    best, best_step = None, -1
    for child in root.iterdir():
        name = child.name
        if child.is_dir() and name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            step = int(name[len("checkpoint-"):])
            if step > best_step and (child / "trainer_state.json").is_file():
                best, best_step = child, step
    return best


def _make_trainer_class():
    from transformers import Trainer
    from transformers.trainer_utils import rotate_checkpoints

    class AtomicCheckpointTrainer(Trainer):
        """A Trainer whose checkpoints appear under their final name only once completely written."""

        _staging_dir: str | None = None

        def _get_output_dir(self, trial):
            if self._staging_dir is not None:
                return self._staging_dir
            return super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            run_dir = super()._get_output_dir(trial)
            staging = os.path.join(run_dir, STAGING_DIR)
            name = f"checkpoint-{self.state.global_step}"
            self._staging_dir = staging
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging_dir = None
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
                _fsync_tree(staged)
                if os.path.exists(final):
                    shutil.rmtree(final)
                os.replace(staged, final)
                _fsync_dir(run_dir)
                try:
                    os.rmdir(staging)  # empty now; a non-empty one is swept at the next start
                except OSError:
                    pass
                rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=False)
            self.accelerator.wait_for_everyone()

    return AtomicCheckpointTrainer


def _fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- logging
def _make_log_callback(log_path: Path, model):
    from transformers import TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        """Appends one JSON line per Trainer log event with a training loss (main process only)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            # every rank reads the curvature: under FSDP2 the parameters are sharded DTensors and reading one is a
            # collective, which would hang if only rank 0 entered it
            curvature = curvature_summary(model)
            if not state.is_world_process_zero:
                return
            entry = {
                "step": state.global_step,
                "epoch": round(float(state.epoch or 0.0), 4),
                "loss": float(logs["loss"]),
                "lr": float(logs.get("learning_rate", 0.0)),
            }
            if "grad_norm" in logs and logs["grad_norm"] is not None:
                entry["grad_norm"] = float(logs["grad_norm"])
            if curvature is not None:
                entry["curvature"] = curvature
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
                handle.flush()

    return JsonlLogCallback()


def read_log(log_path: str | os.PathLike) -> list[dict]:
    path = Path(log_path)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash: everything after it is unreliable
    return entries


def _truncate_log(log_path: Path, max_step: int) -> None:
    """Keep log entries up to ``max_step`` (the checkpoint a resumed run restarts from)."""
    entries = [e for e in read_log(log_path) if int(e.get("step", 0)) <= max_step]
    tmp = log_path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    os.replace(tmp, log_path)


def plot_loss_curve(log_path: str | os.PathLike, plot_path: str | os.PathLike, title: str = "") -> Path | None:
    """A PNG of loss (and mean curvature, where logged) against the step; None when the log is empty."""
    entries = read_log(log_path)
    if not entries:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in entries]
    with_curv = [e for e in entries if e.get("curvature")]
    rows = 2 if with_curv else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7, 3.2 * rows), sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot(steps, [e["loss"] for e in entries], color="tab:blue", lw=1.2, label="training loss")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [e.get("lr", 0.0) for e in entries], color="tab:gray", lw=0.8, ls="--", label="learning rate")
    lr_ax.set_ylabel("learning rate", color="tab:gray")
    ax.set_title(title or "training loss")
    if with_curv:
        cax = axes[1][0]
        cs = [e["step"] for e in with_curv]
        cax.plot(cs, [e["curvature"]["mean"] for e in with_curv], color="tab:red", label="mean K")
        cax.fill_between(cs, [e["curvature"]["min"] for e in with_curv], [e["curvature"]["max"] for e in with_curv],
                         color="tab:red", alpha=0.2, label="min-max K")
        cax.set_ylabel("curvature K")
        cax.legend(loc="best", fontsize=8)
        cax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("step")
    fig.tight_layout()
    plot_path = Path(plot_path)
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{plot_path.stem}.", suffix=".png", dir=plot_path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)
        os.replace(tmp, plot_path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return plot_path


# ---------------------------------------------------------------------------------------------- dataset
class ListDataset:
    """A map-style dataset over pre-tokenized examples (Trainer needs ``__len__`` and ``__getitem__``)."""

    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return self.examples[index]


# ---------------------------------------------------------------------------------------------- main entry
def _check_output_dir(output_dir: Path, resume: bool) -> None:
    """Refuse to start over a run that got somewhere (a checkpoint, an adapter or a summary); a directory
    left by a run that failed before its first checkpoint is reused."""
    if resume:
        return
    if last_checkpoint(output_dir) is not None or (output_dir / ADAPTER_DIR).exists() or (output_dir / SUMMARY_NAME).exists():
        raise HypLoraUserError(
            f"{output_dir} already holds a training run; pass --resume to continue it, or choose another --output-dir"
        )


def train(
    config: TrainConfig,
    *,
    resume: bool | str = False,
    model=None,
    tokenizer=None,
    callbacks: list | None = None,
    log: Callable[[str], None] = print,
    disable_tqdm: bool | None = None,
) -> TrainResult:
    """Run a training job described by ``config``; see the module docstring for what it writes.

    ``resume``: False, True (the last complete checkpoint in the output directory) or a checkpoint path.
    ``model`` / ``tokenizer``: already-loaded objects to use instead of loading ``config.model`` (tests).
    """
    import torch
    from transformers import TrainingArguments, set_seed

    from ..data.tokenization import CausalLMCollator, tokenize_records
    from ..data.training_sets import load_training_data
    from ..models import load_model, load_tokenizer

    import warnings

    config.validate()
    started = time.time()
    # peft looks for a config.json next to a GGUF file to decide whether embeddings changed; they never do here.
    warnings.filterwarnings("ignore", message="Could not find a config file in")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated")
    warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true")
    output_dir = Path(config.output_dir)
    main = _is_main_process()
    _check_output_dir(output_dir, bool(resume))

    checkpoint: Path | None = None
    if resume:
        checkpoint = Path(resume) if isinstance(resume, (str, os.PathLike)) else last_checkpoint(output_dir)
        if checkpoint is None:
            raise HypLoraUserError(f"nothing to resume: {output_dir / CHECKPOINT_DIR} has no complete checkpoint")
        if not (checkpoint / "trainer_state.json").is_file():
            raise HypLoraUserError(f"{checkpoint} is not a complete Trainer checkpoint")

    set_seed(config.seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise HypLoraUserError(f"--template chat: the tokenizer of {config.model!r} has no chat template")

    data = load_training_data(
        config.data, config.data_dir, dedup=config.dedup, max_samples=config.max_train_samples,
        seed=config.seed, builtin_size=config.builtin_size, log=log if main else None,
    )
    tokenized = tokenize_records(data.records, tokenizer, template=config.template, cutoff_len=config.cutoff_len)
    if not tokenized.examples:
        raise HypLoraUserError(f"no training example keeps a response token within cutoff {config.cutoff_len}")
    stats = {**data.stats, "tokenization": tokenized.stats}
    if main:
        dedup = data.stats.get("dedup", {})
        dedup_note = (f"{dedup['dropped']} dropped as test-set duplicates" if "dropped" in dedup
                      else f"deduplication skipped: {dedup.get('skipped', 'n/a')}")
        log(
            f"training data: {stats['used']} records ({dedup_note}), "
            f"{tokenized.stats['truncated']} truncated to {config.cutoff_len} tokens"
        )

    log_path, plot_path = output_dir / LOG_NAME, output_dir / PLOT_NAME
    saved_config = {**config.to_dict(), "versions": _versions(), "effective_batch_size": config.effective_batch_size}
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        staging = output_dir / CHECKPOINT_DIR / STAGING_DIR
        if staging.exists():
            shutil.rmtree(staging)  # left by a crash during a checkpoint save
        write_json_atomic(output_dir / CONFIG_NAME, saved_config)
        write_json_atomic(output_dir / DATA_STATS_NAME, stats)
        if checkpoint is not None:
            state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
            _truncate_log(log_path, int(state.get("global_step", 0)))
        elif log_path.exists():
            log_path.unlink()

    has_accelerator = torch.cuda.is_available() or bool(getattr(torch, "xpu", None) and torch.xpu.is_available())
    if not has_accelerator and getattr(torch.backends, "mps", None) is not None:
        has_accelerator = torch.backends.mps.is_available()
    if config.precision == "fp16" and not has_accelerator:
        raise HypLoraUserError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.precision]
    if model is None:
        model = load_model(config.model, dtype=dtype, trust_remote_code=config.trust_remote_code)
    _unmark_dequantized_gguf(model)
    if config.gradient_checkpointing:
        model.config.use_cache = False
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    peft_model = attach_adapter(model, config)
    if main:
        trainable, total = peft_model.get_nb_trainable_parameters()
        log(f"{config.method}: {trainable:,} trainable parameters of {total:,} ({100 * trainable / total:.3f}%)")

    args = TrainingArguments(
        output_dir=str(output_dir / CHECKPOINT_DIR),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        use_cpu=not has_accelerator,
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=config.dataloader_num_workers,
        disable_tqdm=disable_tqdm if disable_tqdm is not None else False,
        # every trainable tensor of a LoRA, DoRA or HypLoRA adapter gets a gradient each step, so DDP need not
        # search the graph for unused ones (the Trainer's default for a PeftModel, an extra pass per step)
        ddp_find_unused_parameters=False,
        # the base model is frozen, so its buffers (rotary frequencies) are equal on every rank and never change:
        # DDP need not broadcast them before every forward, a collective that makes each rank wait for the others
        ddp_broadcast_buffers=False,
        # the HypLoRA branch has no graph breaks; its gates enter the graph as one opaque operation per layer
        torch_compile=config.torch_compile,
    )
    trainer_cls = _make_trainer_class()
    trainer = trainer_cls(
        model=peft_model,
        args=args,
        train_dataset=ListDataset(tokenized.examples),
        data_collator=CausalLMCollator(tokenizer.pad_token_id),
        callbacks=[_make_log_callback(log_path, peft_model), *(callbacks or [])],
    )
    if main and checkpoint is not None:
        log(f"resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)

    adapter_dir = output_dir / ADAPTER_DIR
    entries = read_log(log_path) if main else []
    final_loss = entries[-1]["loss"] if entries else None
    plot = None
    # every rank takes part: under FSDP / DeepSpeed ZeRO-3 this gathers the sharded parameters (full tensors on CPU)
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if trainer.is_world_process_zero():
        tmp_adapter = output_dir / f".{ADAPTER_DIR}.tmp"
        if tmp_adapter.exists():
            shutil.rmtree(tmp_adapter)
        peft_model.save_pretrained(str(tmp_adapter), state_dict=state_dict)
        # the run's settings travel with the adapter (evaluation reads model, template and seed from them)
        write_json_atomic(tmp_adapter / "training_config.json", saved_config)
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        os.replace(tmp_adapter, adapter_dir)
        plot = plot_loss_curve(log_path, plot_path, title=f"{config.method} on {config.data} ({config.model})")
        write_json_atomic(output_dir / SUMMARY_NAME, {
            "global_step": trainer.state.global_step,
            "epoch": trainer.state.epoch,
            "final_loss": final_loss,
            "runtime_s": round(time.time() - started, 2),
            "resumed_from": str(checkpoint) if checkpoint is not None else None,
            "adapter": str(adapter_dir),
            "log": str(log_path),
            "plot": str(plot) if plot else None,
        })
    trainer.accelerator.wait_for_everyone()
    return TrainResult(
        output_dir=output_dir,
        adapter_dir=adapter_dir,
        log_path=log_path,
        plot_path=plot,
        global_step=trainer.state.global_step,
        final_loss=final_loss,
        runtime_s=time.time() - started,
        resumed_from=str(checkpoint) if checkpoint is not None else None,
    )
