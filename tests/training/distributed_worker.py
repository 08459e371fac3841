"""The per-process side of tests/training/test_distributed.py, started by torchrun or ``accelerate launch``.

    distributed_worker.py train SPEC.json      hyplora.training.train() with a callback that writes each rank's
                                               trainable parameters (gathered if sharded) to rank<R>.safetensors
    distributed_worker.py fsdp2-layer OUT.json HypLoRA layers under torch FSDP2 (fully_shard): gradients against
                                               one process on the whole batch
    distributed_worker.py zero OUT.json        HypLoRA under DeepSpeed ZeRO-2 and ZeRO-3 (needs deepspeed)
    distributed_worker.py launch-env OUT_DIR   writes the launcher's ACCELERATE_*/FSDP_* variables per rank

Not a test module (its name does not start with ``test_``); it is run as a script, with gloo on CPU.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch

TESTS_DIR = Path(__file__).resolve().parents[1]



def _is_scalar(name: str) -> bool:
    """HypLoRA's learned curvature and feature scale: one 2-element tensor per layer, or 1-element tensors."""
    return any(kind in name for kind in ("lora_log_scales", "lora_curvature", "lora_feature_scale"))

def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _write_json(path: Path, payload) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A plain CPU tensor of the whole value (an FSDP2 DTensor is gathered: every rank must call this)."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        tensor = tensor.full_tensor()
    return tensor.detach().to("cpu").clone()


def _tiny_llama(seed: int = 0):
    sys.path.insert(0, str(TESTS_DIR))
    try:
        from conftest import (
            make_tiny_llama,  # the shared tiny-model factory of tests/conftest.py
        )
    finally:
        sys.path.pop(0)
    return make_tiny_llama(seed=seed, vocab_size=128).train()


# ------------------------------------------------------------------------------------------------- train
def _force_accelerate_fsdp_on_cpu() -> None:
    """accelerate (1.15) turns FSDP on only for GPU-like distributed types: on CPU (MULTI_CPU) an FSDP launch
    silently runs as DDP. Report MULTI_GPU instead so that its FSDP code path (fully_shard, sharded checkpoints,
    gathered state dict) runs on CPU with gloo. Test-only: the product never does this."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.MULTI_GPU

    PartialState.__init__ = init


def _dump_callback(dump_dir: Path):
    from transformers import TrainerCallback

    class DumpTrainableParameters(TrainerCallback):
        """At the end of training every rank writes its trainable parameters, and what kind of run it was."""

        def on_train_end(self, args, state, control, model=None, **kwargs):
            from accelerate.state import AcceleratorState
            from safetensors.torch import save_file
            from torch.distributed.fsdp import FSDPModule
            from torch.distributed.tensor import DTensor

            tensors, sharded = {}, False
            for name, param in model.named_parameters():
                if param.requires_grad:
                    sharded = sharded or isinstance(param, DTensor)
                    tensors[name] = _full(param).contiguous()
            rank = _rank()
            tmp = dump_dir / f".rank{rank}.safetensors.tmp"
            save_file(tensors, str(tmp))
            os.replace(tmp, dump_dir / f"rank{rank}.safetensors")
            _write_json(dump_dir / f"rank{rank}.json", {
                "rank": rank,
                "world_size": args.world_size,
                "distributed_type": AcceleratorState().distributed_type.value,
                "sharded": sharded,
                "fsdp_units": sorted({type(m).__name__ for m in model.modules() if isinstance(m, FSDPModule)}),
                "global_step": state.global_step,
            })

    return DumpTrainableParameters()


def run_train(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if spec.get("force_fsdp_on_cpu"):
        _force_accelerate_fsdp_on_cpu()
    from hyplora.training import resolve_config, train

    dump_dir = Path(spec["dump_dir"])
    dump_dir.mkdir(parents=True, exist_ok=True)
    train(resolve_config(spec["overrides"]), callbacks=[_dump_callback(dump_dir)], disable_tqdm=True,
          log=print if _rank() == 0 else (lambda *_: None))


# ------------------------------------------------------------------------------------------- fsdp2-layer
def _hyplora(model, **kwargs):
    import peft

    from hyplora import HypLoraConfig

    config = HypLoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM", init_lora_weights=False,
                           target_modules=["q_proj", "v_proj", "down_proj"], **kwargs)
    return peft.get_peft_model(model, config)


def _batch(rows: int = 4, length: int = 12) -> torch.Tensor:
    return torch.randint(0, 128, (rows, length), generator=torch.Generator().manual_seed(1))


def _shard(peft_model) -> None:
    from torch.distributed.fsdp import fully_shard

    for layer in peft_model.base_model.model.model.layers:
        fully_shard(layer)
    fully_shard(peft_model)


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: _full(p.grad) for name, p in model.named_parameters() if p.requires_grad}


def run_fsdp2_layer(out_path: str) -> None:
    """Each check: one process computes gradients on the whole batch (before sharding), then the model is
    sharded with fully_shard over the 2 ranks, each rank backpropagates its half, and the gathered gradients
    are compared."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ids = _batch(2 * world)
    local = ids[2 * rank: 2 * rank + 2]
    result: dict = {}

    # 1. float32 model: gradients of every trainable tensor (lora_A/B, curvature, feature scale) match.
    torch.manual_seed(0)
    model = _hyplora(_tiny_llama())
    reference = copy.deepcopy(model)
    reference(input_ids=ids, labels=ids).loss.backward()
    expected = _grads(reference)
    _shard(model)
    result["all_trainable_sharded"] = all(isinstance(p, DTensor) for p in model.parameters() if p.requires_grad)
    result["scalar_dtypes"] = sorted({str(p.dtype) for n, p in model.named_parameters() if _is_scalar(n)})
    model(input_ids=local, labels=local).loss.backward()
    got = _grads(model)
    result["names_equal"] = sorted(got) == sorted(expected)
    result["scalar_names"] = sorted(n for n in got if _is_scalar(n))
    result["max_rel_error"] = max(
        ((got[n] - expected[n]).abs().max() / expected[n].abs().max().clamp_min(1e-12)).item() for n in expected
    )
    result["scalar_grads_nonzero"] = all((got[n].abs() > 0).all() for n in result["scalar_names"])

    # 2. compat="reference": the released code clips the curvature parameter's gradient to [-0.01, 0.01]. Under
    # data parallelism each rank clips its own gradient before the average (as DDP did with the old tensor
    # hook); the clip must survive sharding, which replaces the Parameter objects.
    torch.manual_seed(0)
    model = _hyplora(_tiny_llama(), compat="reference")
    reference = copy.deepcopy(model)
    (reference(input_ids=local, labels=local).loss * 1e8).backward()  # large enough to be clipped
    local_clipped = {n: g for n, g in _grads(reference).items() if "lora_curvature" in n}
    for grad in local_clipped.values():
        dist.all_reduce(grad)
        grad /= world
    _shard(model)
    (model(input_ids=local, labels=local).loss * 1e8).backward()
    got = {n: g for n, g in _grads(model).items() if "lora_curvature" in n}
    result["reference_clip_max_abs"] = max(g.abs().item() for g in got.values())
    result["reference_clip_max_error"] = max((got[n] - local_clipped[n]).abs().item() for n in got)

    # 3. bfloat16 base weights with float32 adapter parameters in the same sharded unit (the --bf16 case).
    torch.manual_seed(0)
    model = _hyplora(_tiny_llama().to(torch.bfloat16))
    result["mixed_dtypes"] = sorted({str(p.dtype) for p in model.parameters()})
    _shard(model)
    loss = model(input_ids=local, labels=local).loss
    loss.backward()
    result["mixed_loss_finite"] = bool(torch.isfinite(loss).item())
    result["mixed_grads_finite"] = all(bool(torch.isfinite(g).all()) for g in _grads(model).values())
    if rank == 0:
        _write_json(Path(out_path), result)


# -------------------------------------------------------------------------------------------------- zero
def run_zero(out_path: str) -> None:
    """One AdamW step under ZeRO-2 and ZeRO-3 (CPU accelerator, gloo) against the same step in one process."""
    import deepspeed
    import torch.distributed as dist

    deepspeed.init_distributed("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ids = _batch(2 * world)
    result = {}
    for stage in (2, 3):
        torch.manual_seed(0)
        model = _hyplora(_tiny_llama())
        reference = copy.deepcopy(model)
        params = [p for p in reference.parameters() if p.requires_grad]
        initial = {n: p.detach().clone() for n, p in reference.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW(params, lr=0.01, weight_decay=0.01)
        losses = [reference(input_ids=ids[2 * r: 2 * r + 2], labels=ids[2 * r: 2 * r + 2]).loss for r in range(world)]
        (sum(losses) / world).backward()
        optimizer.step()
        expected = {n: p.detach().clone() for n, p in reference.named_parameters() if p.requires_grad}

        config = {
            "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": stage},
            "optimizer": {"type": "AdamW", "params": {"lr": 0.01, "weight_decay": 0.01, "torch_adam": True}},
        }
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=config
        )
        local = ids[2 * rank: 2 * rank + 2]
        loss = engine(input_ids=local, labels=local).loss
        engine.backward(loss)
        engine.step()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters([p for _, p in named], enabled=stage == 3):
            got = {n: p.detach().clone() for n, p in named}
        result[f"stage{stage}"] = {
            "names_equal": sorted(got) == sorted(expected),
            "max_error": max((got[n] - value).abs().max().item() for n, value in expected.items()),
            "max_step": max((value - initial[n]).abs().max().item() for n, value in expected.items()),
            "scalars": sum(1 for n in got if _is_scalar(n)),
        }
    if rank == 0:
        _write_json(Path(out_path), result)


# -------------------------------------------------------------------------------------------- launch-env
def run_launch_env(out_dir: str) -> None:
    keys = {k: v for k, v in os.environ.items() if k.startswith(("ACCELERATE_", "FSDP_", "WORLD_SIZE", "RANK"))}
    _write_json(Path(out_dir) / f"env{_rank()}.json", keys)


def main(argv: list[str]) -> None:
    commands = {"train": run_train, "fsdp2-layer": run_fsdp2_layer, "zero": run_zero, "launch-env": run_launch_env}
    if len(argv) != 2 or argv[0] not in commands:
        raise SystemExit(f"usage: distributed_worker.py {{{','.join(commands)}}} PATH")
    commands[argv[0]](argv[1])
    _shut_down()


def _shut_down() -> None:
    """Leave without interpreter finalization: gloo's worker threads can still hold tensors of finished async
    collectives (FSDP issues them), and freeing those while the interpreter is torn down aborts the process
    ("terminate called without an active exception") now and then. The process group is destroyed first."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
