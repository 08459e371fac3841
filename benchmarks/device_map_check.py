"""Check a HypLoRA model split across two GPUs by ``device_map`` against the same model on one GPU.

A random-weight Llama (float32; hidden 512, intermediate 2048, 4 layers, 8 heads, 4 KV heads, vocab 1000) with a
HypLoRA adapter (r = 16 on q, k, v, up, down; B random, not LoRA's zeros, so that the branch counts) runs on
cuda:0 alone, and dispatched by accelerate's ``dispatch_model`` (as ``from_pretrained(device_map=...)`` does):
embeddings and layers 0-1 on cuda:0, layers 2-3, the final norm and lm_head on cuda:1; the adapter is added after
the split, so peft places it beside each base layer. For each variant it compares the no-grad logits (the decoding
path) at 1 x 1, 2 x 64 and 64 x 64 tokens (up_proj, d_in + 2 d_out > kernels.FUSED_NARROW_WIDTH, takes the
matmul path above kernels.FUSED_MAX_ROWS tokens, or for lorentz-full the two-pass form up to
kernels.TWO_PASS_MAX_ROWS, every other layer and shape the one kernel), the loss and every
adapter gradient of a training step, and the tokens of a greedy ``generate``. It counts the Triton launches per
device (both paths must run on both GPUs: a kernel launched on the current device instead of its tensors' would
show here as wrong numbers or a crash) and reports where the adapted layers are. Exit 1 if an error exceeds the
tolerance or a check fails, 2 with fewer than 2 CUDA GPUs.

    python benchmarks/device_map_check.py [--json PATH]     # on a machine with >= 2 GPUs
    python benchmarks/device_map_check.py --cpu-smoke       # both "devices" the CPU, tiny sizes: the code path only

--tiny takes a tiny model on the GPUs too (the one kernel up to 6 tokens, for both paths); --variants picks variants.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import os
import sys

import torch
from _common import TARGETS, device_name, relative_error, versions_line, write_json_atomic

VARIANTS = ["lorentz", "stereographic", "lorentz-full"]
TOLERANCE = 1e-4  # relative; float32 model, the same kernels on both sides
MIN_EFFECT = 1e-3  # the adapter must change the logits at least this much (relative), or the check says nothing
B_STD = 0.02  # the adapters' B (LoRA starts it at zero, which would make the branch vanish)
SIZES = {
    "full": {"shape": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=8,
                           num_key_value_heads=4, vocab_size=1000), "rank": 16,
             "inputs": [(1, 1), (2, 64), (64, 64)], "new_tokens": 8, "one_kernel_rows": None},
    # the one kernel up to 6 rows, so that the tiny run takes both paths too (few rows: Triton's interpreter is slow)
    "tiny": {"shape": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=128), "rank": 4,
             "inputs": [(1, 1), (2, 3), (1, 7)], "new_tokens": 2, "one_kernel_rows": 6},
}
# the launch functions that `functional` calls, and the path each stands for
LAUNCHES = {"add_fused_": "one kernel", "add_gated_": "matmuls", "add_lorentz_full_": "matmuls",
            "add_two_pass_": "two passes", "gate_forward": "training", "lorentz_full_forward": "training"}
# the paths that must each launch on every device: the one kernel, the wider layers' path (lorentz-full takes two
# passes up to kernels.TWO_PASS_MAX_ROWS tokens, the matmul path beyond) and training
REQUIRED_PATHS = [("one kernel",), ("matmuls", "two passes"), ("training",)]


@contextlib.contextmanager
def counted_launches():
    """Count the Triton launches of `hyplora.adapter.kernels` by path and by the device of their first tensor."""
    from hyplora.adapter import kernels

    counts = collections.Counter()
    saved = {name: getattr(kernels, name) for name in LAUNCHES}

    def counted(name, launch):
        def wrapper(*args, **kwargs):
            counts[f"{LAUNCHES[name]} @ {args[0].device}"] += 1
            return launch(*args, **kwargs)
        return wrapper

    for name, launch in saved.items():
        setattr(kernels, name, counted(name, launch))
    try:
        yield counts
    finally:
        for name, launch in saved.items():
            setattr(kernels, name, launch)


def build(variant: str, size: dict, devices: list[str]):
    """``(single, split)``: the same model and adapter on ``devices[0]``, and split across both devices."""
    import peft
    from accelerate import dispatch_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hyplora import HypLoraConfig

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(LlamaConfig(**size["shape"])).to(torch.float32).eval()
    config = lambda: HypLoraConfig(r=size["rank"], lora_alpha=2 * size["rank"], target_modules=TARGETS,  # noqa: E731
                                   task_type="CAUSAL_LM", variant=variant)
    single = peft.get_peft_model(copy.deepcopy(base).to(devices[0]), config())
    layers = base.config.num_hidden_layers
    device_map = {"model.embed_tokens": devices[0], "model.rotary_emb": devices[0],
                  **{f"model.layers.{i}": devices[i >= layers // 2] for i in range(layers)},
                  "model.norm": devices[1], "lm_head": devices[1]}
    # as transformers' from_pretrained(device_map=...) does; hooks even where both "devices" are the CPU
    base = dispatch_model(base, device_map, main_device=devices[0], skip_keys=base._skip_keys_device_placement,
                          force_hooks=True)
    split = peft.get_peft_model(base, config())
    generator = torch.Generator().manual_seed(1)
    split_params = dict(split.named_parameters())
    trainable = {name for name, p in single.named_parameters() if p.requires_grad}
    assert trainable == {name for name, p in split.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for name, param in single.named_parameters():
            if name in trainable:
                if ".lora_B." in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * B_STD)
                split_params[name].copy_(param)
    return single.eval(), split.eval()


def check(variant: str, size: dict, devices: list[str], triton_expected: bool) -> dict:
    from hyplora import HypLoraLinear

    single, split = build(variant, size, devices)
    layers = [m for m in split.modules() if isinstance(m, HypLoraLinear)]
    assert all(m.lora_A["default"].weight.device == m.lora_B["default"].weight.device == m.base_layer.weight.device
               for m in layers), "an adapter is not on its base layer's device"
    result = {"placement": dict(collections.Counter(str(m.lora_A["default"].weight.device) for m in layers)),
              "errors": {}, "adapter_effect": {}, "failures": []}
    vocab, first = size["shape"]["vocab_size"], devices[0]  # inputs go to the embedding's device
    generator = torch.Generator().manual_seed(2)
    ids = {shape: torch.randint(0, vocab, shape, generator=generator).to(first) for shape in size["inputs"]}
    with torch.no_grad():
        references = {shape: single(input_ids=x).logits for shape, x in ids.items()}
        with single.disable_adapter():
            for shape, x in ids.items():
                result["adapter_effect"]["x".join(map(str, shape))] = relative_error(single(input_ids=x).logits,
                                                                                    references[shape])
        with counted_launches() as launches:  # the split model's only
            for shape, x in ids.items():
                result["errors"]["logits " + "x".join(map(str, shape))] = relative_error(split(input_ids=x).logits,
                                                                                         references[shape])
    x = ids[size["inputs"][1]]
    losses = []
    for model in (single, split):
        model.train()
        with counted_launches() as training:  # the split model's are kept (it runs second)
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
        losses.append(loss)
        model.eval()
    result["errors"]["loss"] = relative_error(losses[1], losses[0])
    split_params = dict(split.named_parameters())
    grads = {name: relative_error(split_params[name].grad, p.grad)
             for name, p in single.named_parameters() if p.requires_grad}
    result["worst_grad_param"] = max(grads, key=grads.get)
    result["errors"]["worst grad"] = grads[result["worst_grad_param"]]
    result["grad_errors"] = grads
    result["launches"] = dict(launches) | dict(training)
    options = dict(max_new_tokens=size["new_tokens"], min_new_tokens=size["new_tokens"], do_sample=False,
                   pad_token_id=0)
    with torch.no_grad():
        tokens = [m.generate(input_ids=x, attention_mask=torch.ones_like(x), **options).cpu() for m in (single, split)]
    result["generated"] = [t[:, x.shape[1]:].tolist() for t in tokens]
    result["same_tokens"] = torch.equal(*tokens)

    failures = result["failures"]
    failures += [f"{name} {value:.1e} > {TOLERANCE:.0e}" for name, value in result["errors"].items()
                 if not value <= TOLERANCE]
    if not result["same_tokens"]:
        failures.append("generate made other tokens")
    if not min(result["adapter_effect"].values()) >= MIN_EFFECT:
        failures.append(f"the adapter changes the logits by less than {MIN_EFFECT:.0e}")
    failures += [f"no adapted layer on {d}" for d in devices if d not in result["placement"]]
    if triton_expected:
        failures += [f"no {' or '.join(paths)} Triton launch on {d}" for d in devices for paths in REQUIRED_PATHS
                     if not any(result["launches"].get(f"{path} @ {d}") for path in paths)]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {VARIANTS}")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and few tokens")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="both devices the CPU (implies --tiny; Triton's interpreter where TRITON_INTERPRET=1)")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args(argv)
    size = SIZES["tiny" if args.tiny or args.cpu_smoke else "full"]
    if args.cpu_smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read where hyplora.adapter.kernels is first imported
        devices = ["cpu", "cpu"]
    elif torch.cuda.device_count() < 2:
        print(f"device_map_check.py needs at least 2 CUDA GPUs; this machine has {torch.cuda.device_count()} "
              "(--cpu-smoke runs the code path on the CPU)", file=sys.stderr)
        return 2
    else:
        devices = ["cuda:0", "cuda:1"]
    from hyplora.adapter import kernels

    saved_env, saved_rows = os.environ.get("HYPLORA_TRITON"), (kernels.FUSED_MAX_ROWS, kernels.FUSED_NARROW_MAX_ROWS)
    if args.cpu_smoke and saved_env is None and kernels.INTERPRET:
        os.environ["HYPLORA_TRITON"] = "interpret"
    if size["one_kernel_rows"] is not None:
        kernels.FUSED_MAX_ROWS = kernels.FUSED_NARROW_MAX_ROWS = size["one_kernel_rows"]
    names = [device_name(torch.device(d)) + ("" if d == "cpu" else f" ({d})") for d in devices]
    print(f"devices: {', '.join(names)} | {versions_line()}")
    triton = kernels.supports(torch.device(devices[0]), torch.float32, size["rank"], "lorentz")
    print(f"Triton path: {'on' if triton else 'off (eager torch path)'}; tolerance {TOLERANCE:.0e} relative; "
          "split (layers on both devices) against one device:")
    report = {"devices": devices, "device_names": names, "versions": versions_line(), "tolerance": TOLERANCE,
              "size": size, "triton": triton, "variants": {}}
    try:
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            result = check(variant, size, devices, triton_expected=triton or devices[0] != "cpu")
            report["variants"][variant] = result
            print(f"{variant:14s} " + "  ".join(f"{k} {v:.1e}" for k, v in result["errors"].items())
                  + ("  OK" if not result["failures"] else "  FAIL"))
            print(f"{'':14s} generate: {'same' if result['same_tokens'] else 'OTHER'} tokens; adapted layers: "
                  + ", ".join(f"{d} {n}" for d, n in result["placement"].items())
                  + f"; adapter effect on the logits >= {min(result['adapter_effect'].values()):.1e}")
            print(f"{'':14s} Triton launches: "
                  + (", ".join(f"{k} {v}" for k, v in sorted(result["launches"].items())) or "none"))
            for failure in result["failures"]:
                print(f"{'':14s} FAIL: {failure}")
    finally:
        kernels.FUSED_MAX_ROWS, kernels.FUSED_NARROW_MAX_ROWS = saved_rows
        if saved_env is None:
            os.environ.pop("HYPLORA_TRITON", None)
    report["failed"] = any(r["failures"] for r in report["variants"].values())
    if args.json:
        write_json_atomic(args.json, report)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
