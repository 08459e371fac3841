"""Method -> PEFT adapter config: LoRA and DoRA from stock peft, HypLoRA from `hyplora.adapter`."""

from __future__ import annotations

import math

from ..errors import HypLoraUserError
from .config import TrainConfig


def _hyplora_config_class():
    try:
        from ..adapter import HypLoraConfig  # imported lazily: the adapter is optional for lora/dora runs
    except ImportError as exc:
        raise HypLoraUserError(
            "--method hyplora needs hyplora.adapter (HypLoraConfig), which this installation lacks; "
            "use --method lora or dora, or update hyplora"
        ) from exc
    return HypLoraConfig


def build_peft_config(config: TrainConfig):
    """The PEFT config for ``config.method`` (task type CAUSAL_LM)."""
    from peft import LoraConfig

    common = dict(
        r=config.rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    if config.method == "lora":
        return LoraConfig(**common)
    if config.method == "dora":
        return LoraConfig(use_dora=True, **common)
    if config.method == "hyplora":
        cls = _hyplora_config_class()
        try:
            return cls(
                **common,
                variant=config.variant,
                curvature=config.curvature,
                learn_curvature=config.learn_curvature,
                feature_scale=config.feature_scale,
                learn_feature_scale=config.learn_feature_scale,
                max_radius=config.max_radius,
                compat=config.compat,
            )
        except ValueError as exc:
            raise HypLoraUserError(str(exc)) from exc
    raise HypLoraUserError(f"unknown method {config.method!r}")


def attach_adapter(model, config: TrainConfig):
    """Wrap ``model`` in a PeftModel with the configured adapter; unknown target modules are a user error."""
    from peft import get_peft_model

    peft_config = build_peft_config(config)
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:
        if "not found in the base model" in str(exc) or "Target modules" in str(exc):
            names = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name})
            linear_like = [n for n in names if n.endswith("proj") or n in ("c_attn", "c_proj", "c_fc", "fc1", "fc2")]
            raise HypLoraUserError(
                f"target modules {', '.join(config.target_modules)} not found in the model; "
                f"candidates: {', '.join(linear_like) or ', '.join(names[:20])}"
            ) from exc
        raise


def curvature_values(model, adapter_name: str = "default") -> dict[str, float]:
    """Curvature K of every HypLoRA layer (empty for LoRA/DoRA), keyed by module name."""
    values: dict[str, float] = {}
    for name, module in model.named_modules():
        fn = getattr(module, "curvature", None)
        if not callable(fn):
            continue
        try:
            value = fn(adapter_name)
        except (KeyError, TypeError, AttributeError):
            continue
        try:
            number = float(value.detach().float().mean()) if hasattr(value, "detach") else float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            values[name] = number
    return values


def curvature_summary(model, adapter_name: str = "default") -> dict | None:
    """``{"mean", "min", "max", "layers"}`` over HypLoRA layers, or None where there are none."""
    values = list(curvature_values(model, adapter_name).values())
    if not values:
        return None
    return {
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
        "layers": len(values),
    }
