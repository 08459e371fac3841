"""Helpers shared by the benchmark scripts: adapter configurations, model shapes, device and version lines.

The scripts run as ``python benchmarks/<script>.py``, which puts this folder first on ``sys.path``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

# Adapter methods compared in issue 6, all with the same rank and targets.
METHODS = ["lora", "hyplora-lorentz", "hyplora-lorentz-full", "hyplora-stereographic", "hyplora-reference"]
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
METHOD_LABELS = {
    "base": "base model (no adapter)",
    "lora": "LoRA (stock peft)",
    "hyplora-lorentz": "hyplora lorentz",
    "hyplora-lorentz-full": "hyplora lorentz-full",
    "hyplora-stereographic": "hyplora stereographic",
    "hyplora-reference": 'compat="reference" (paper\'s code path)',
    # not in METHODS: K and s fixed (learn_curvature=False, learn_feature_scale=False), no per-layer scalar
    # parameters, to measure what those cost
    "hyplora-lorentz-fixed": "hyplora lorentz, K and s fixed",
    "hyplora-stereographic-fixed": "hyplora stereographic, K and s fixed",
    # not in METHODS: every Triton launch through Triton's JIT entry, not the direct launch of the kept compiled
    # kernel (kernels.DIRECT_LAUNCH off; decode.py and prefill.py switch it per method)
    "hyplora-lorentz-jit": "hyplora lorentz, Triton's JIT entry",
    "hyplora-lorentz-full-jit": "hyplora lorentz-full, Triton's JIT entry",
    "hyplora-stereographic-jit": "hyplora stereographic, Triton's JIT entry",
    # not in METHODS: the eager no-grad branch's path forced per method (decode.py's `_PATH_SUFFIXES`): no one
    # kernel and no two-pass form (LoRA's two matmuls and the gate kernel for every layer); no two-pass form; the
    # two-pass form where the one kernel is not taken (kernels.TWO_PASS_MAX_ROWS 256 for every variant); on
    # every wide layer
    "hyplora-lorentz-matmul": "hyplora lorentz, matmul path only",
    "hyplora-lorentz-full-matmul": "hyplora lorentz-full, matmul path only",
    "hyplora-lorentz-one-pass": "hyplora lorentz, no two-pass form",
    "hyplora-lorentz-full-one-pass": "hyplora lorentz-full, no two-pass form",
    "hyplora-stereographic-one-pass": "hyplora stereographic, no two-pass form",
    "hyplora-lorentz-two-pass": "hyplora lorentz, two passes on the widest layers",
    "hyplora-lorentz-full-two-pass": "hyplora lorentz-full, two passes on the widest layers",
    "hyplora-stereographic-two-pass": "hyplora stereographic, two passes on the widest layers",
    "hyplora-lorentz-two-pass-all": "hyplora lorentz, two passes on every wide layer",
    "hyplora-lorentz-full-two-pass-all": "hyplora lorentz-full, two passes on every wide layer",
}

# Llama-architecture shapes (random weights). llama8b-4l: Llama-3-8B cut to 4 layers; llama8b: all 32 layers
# (about 16 GB in bf16 per model; for what depth changes, e.g. whether an eager step stays bound by host time);
# smollm2: SmolLM2-135M (values of its config.json). TINY_SHAPES are for CPU smoke runs.
LLAMA8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000}
MODEL_SHAPES = {
    "llama8b-4l": dict(LLAMA8B, num_hidden_layers=4),
    "llama8b": LLAMA8B,
    "smollm2": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True, "rope_theta": 100000.0,
                "rms_norm_eps": 1e-5, "max_position_embeddings": 8192, "bos_token_id": 0, "eos_token_id": 0},
}
TINY_SHAPES = {
    "llama8b-4l": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "vocab_size": 1000},
    "llama8b": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": 1000},
    "smollm2": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True, "bos_token_id": 0,
                "eos_token_id": 0},
}


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``|value - reference| / |reference|`` (Frobenius norms), both taken to float64 on the CPU."""
    reference = reference.detach().double().cpu()
    return ((value.detach().double().cpu() - reference).norm() / reference.norm().clamp_min(1e-300)).item()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def versions_line() -> str:
    import peft
    import transformers

    return (f"torch {torch.__version__} | transformers {transformers.__version__} | peft {peft.__version__} "
            f"| python {platform.python_version()} | {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_call_us(fn, device, calls: int, repeats: int, warmup: int = 10) -> tuple[float, float, float]:
    """``(median, min, max)`` microseconds per call of ``fn``, called ``calls`` times back to back in each of
    ``repeats`` timings that end with the device synchronised: the host's time per call while the GPU keeps up."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples), min(samples), max(samples)


def one_layer_model(method: str, d: int, rank: int, device, dtype):
    """A model of one (d -> d) ``nn.Linear`` named ``proj``, adapted by stock peft LoRA (``method="lora"``) or by
    HypLoRA of variant ``method``, rank ``rank``, B drawn nonzero (as after some training)."""
    import peft
    import torch.nn as nn

    from hyplora import HypLoraConfig

    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(d, d, bias=False)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    base = One().to(device=device, dtype=dtype)
    if method == "lora":
        config = peft.LoraConfig(r=rank, lora_alpha=64, target_modules=["proj"])
    else:
        config = HypLoraConfig(r=rank, lora_alpha=128, target_modules=["proj"], variant=method)
    model = peft.get_peft_model(base, config)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.01)
    return model


def llama_model(shape: dict, device, dtype, seed: int = 0, **overrides):
    """A ``LlamaForCausalLM`` of the given shape with random weights (seeded), built directly on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**{**shape, **overrides})
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model


def adapter_config(method: str, rank: int):
    import peft

    from hyplora import HypLoraConfig

    if method == "lora":
        return peft.LoraConfig(r=rank, lora_alpha=64, target_modules=TARGETS, task_type="CAUSAL_LM")
    if method not in METHOD_LABELS or method == "base":
        raise SystemExit(f"unknown method {method!r}; choose from {[m for m in METHOD_LABELS if m != 'base']}")
    variant = method.removeprefix("hyplora-")
    for suffix in ("-jit", "-matmul", "-one-pass", "-two-pass-all", "-two-pass"):
        variant = variant.removesuffix(suffix)
    if variant == "reference":
        return HypLoraConfig(r=rank, lora_alpha=128, target_modules=TARGETS, task_type="CAUSAL_LM", compat="reference")
    fixed = variant.endswith("-fixed")
    return HypLoraConfig(r=rank, lora_alpha=128, target_modules=TARGETS, task_type="CAUSAL_LM",
                         variant=variant.removesuffix("-fixed"), learn_curvature=not fixed,
                         learn_feature_scale=not fixed)


def write_json_atomic(path: str, payload) -> None:
    """Write ``payload`` as JSON to ``path`` via a temporary file in the same folder and ``os.replace``."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def median_interval(values: list, confidence: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple:
    """A percentile bootstrap interval for the median of ``values`` (seeded: the same values give the same interval).

    Timings on a shared machine drift and jump between repeats (benchmarks/RESULTS.md), so a median alone does not
    say whether a 5% target was missed or the run was too noisy to tell."""
    import random

    if not values:
        raise ValueError("median_interval needs at least one value")
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return medians[int(tail * (resamples - 1))], medians[int(round((1 - tail) * (resamples - 1)))]


def device_kernels(prof) -> list:
    """The GPU kernels and copies of a finished ``torch.profiler.profile``: device events that are not GPU-side user
    annotations (such as ``Optimizer.step#AdamW.step``), whose spans would count idle gaps and the kernels
    inside them a second time."""
    return [e for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA")
            and not getattr(e, "is_user_annotation", False)]


def compile_models_independently(count: int) -> None:
    """Make torch.compile treat each benchmarked model as if it were the only one in the process.

    The benchmarks compile one model per method, and the models share their code objects (transformers' and
    peft's forward functions). Two dynamo defaults would otherwise make the comparison depend on the order in
    which the models are compiled:

    - at most 8 graphs per code object: later methods would silently fall back to eager execution;
    - "automatic dynamic": a value that differs from the previous compilation of the same code is made a graph
      input. The adapters' float ``scaling`` (alpha / r) differs between LoRA and HypLoRA, so every model
      compiled after the first with another alpha got it as a float64 CPU tensor input, converted on every call,
      and a CPU input makes inductor skip CUDA graphs. A single model in a training or decoding job never
      sees this.
    """
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), count))
            break
    dynamo_config.automatic_dynamic_shapes = False


def profile_host(call, device, top: int, per: int = 1) -> list[tuple[str, int, float, float]]:
    """``(function, calls, own us, cumulative us)`` of the ``top`` Python functions with the most own (``tottime``)
    host time while ``call()`` runs under cProfile, times divided by ``per`` (cProfile adds its own cost to every
    Python call: compare methods, not absolute values)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    synchronize(device)
    profiler.enable()
    call()
    synchronize(device)
    profiler.disable()
    rows = sorted(pstats.Stats(profiler).stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [(f"{file.rsplit('/', 2)[-1] if '/' in file else file}:{line}({name})", calls, own * 1e6 / per,
             cum * 1e6 / per) for (file, line, name), (_, calls, own, cum, _) in rows]


def last_compiled_step_call(model, run_generate) -> tuple[tuple, dict]:
    """The arguments of the last call that ``run_generate()`` (a ``generate`` call) makes to ``model``'s compiled
    decoding step: transformers' ``model._compiled_call``, which ``generate`` reuses while its compile config is
    unchanged, wrapped for the call. Tensors are copies: ``generate`` may update its position tensors in place after
    the step."""
    compiled = getattr(model, "_compiled_call", None)
    if compiled is None:
        raise RuntimeError("transformers did not compile the decoding step (a static cache on a GPU makes it do so)")
    recorded = []

    def recording_call(*call_args, **call_kwargs):
        recorded.append((call_args, {k: v.clone() if isinstance(v, torch.Tensor) else v
                                     for k, v in call_kwargs.items()}))
        return compiled(*call_args, **call_kwargs)

    model._compiled_call = recording_call
    try:
        run_generate()
    finally:
        model._compiled_call = compiled
    if not recorded:
        raise RuntimeError("generate did not call the compiled decoding step")
    return recorded[-1]
