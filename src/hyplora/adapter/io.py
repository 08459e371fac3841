"""Loading saved adapters (HypLoRA, and plain LoRA/DoRA for comparison runs) onto a base model."""

from __future__ import annotations

import json
import os

import torch

from peft import PeftConfig, PeftModel
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME, load_peft_weights, set_peft_model_state_dict

from ..errors import HypLoraUserError
from .config import SAVED_PEFT_TYPE, HypLoraConfig
from .layer import HypLoraLinear


def read_adapter_config(adapter_dir: str | os.PathLike) -> PeftConfig:
    """The adapter's config: a `HypLoraConfig` for HypLoRA adapters, peft's own class otherwise."""
    adapter_dir = os.fspath(adapter_dir)
    path = os.path.join(adapter_dir, CONFIG_NAME)
    if not os.path.isfile(path):
        raise HypLoraUserError(f"{adapter_dir} is not an adapter directory (no {CONFIG_NAME})")
    try:
        with open(path, encoding="utf-8") as handle:
            peft_type = json.load(handle).get("peft_type")
    except (OSError, ValueError) as exc:
        raise HypLoraUserError(f"{path}: unreadable adapter config: {exc}") from exc
    try:
        if peft_type == SAVED_PEFT_TYPE:
            return HypLoraConfig.from_pretrained(adapter_dir)
        return PeftConfig.from_pretrained(adapter_dir)
    except (ValueError, TypeError, KeyError) as exc:
        raise HypLoraUserError(f"{path}: invalid adapter config: {exc}") from exc


def load_adapter(model, adapter_dir, adapter_name: str = "default", is_trainable: bool = False) -> PeftModel:
    """Attach the adapter saved in ``adapter_dir`` to ``model`` and return the `peft.PeftModel`.

    ``model`` is a base model (a new PeftModel wraps it) or a PeftModel (the adapter is added under
    ``adapter_name``). Weights are read from ``adapter_model.safetensors`` only. Every adapter tensor of the
    model must be found in the file with the right shape, else `HypLoraUserError` says what does not fit.
    """
    adapter_dir = os.fspath(adapter_dir)
    config = read_adapter_config(adapter_dir)
    weights_path = os.path.join(adapter_dir, SAFETENSORS_WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        raise HypLoraUserError(f"{adapter_dir} has no {SAFETENSORS_WEIGHTS_NAME} (only safetensors are loaded)")
    config.inference_mode = not is_trainable
    if isinstance(model, PeftModel) and adapter_name in model.peft_config:
        raise HypLoraUserError(f"the model already has an adapter named {adapter_name!r}")
    try:
        if isinstance(model, PeftModel):
            model.add_adapter(adapter_name, config)
            peft_model = model
        else:
            peft_model = PeftModel(model, config, adapter_name=adapter_name)
    except ValueError as exc:
        raise HypLoraUserError(f"adapter {adapter_dir} does not fit the model: {exc}") from exc

    device = next(peft_model.parameters()).device
    state = _merge_separate_scalars(peft_model, load_peft_weights(adapter_dir, device=str(device)), adapter_name)
    try:
        result = set_peft_model_state_dict(peft_model, state, adapter_name=adapter_name)
    except RuntimeError as exc:  # shape mismatch
        raise HypLoraUserError(f"adapter {adapter_dir} does not fit the model: {exc}") from exc
    missing = [key for key in result.missing_keys if f".{adapter_name}" in key and "lora_" in key]
    if missing or result.unexpected_keys:
        raise HypLoraUserError(
            f"adapter {adapter_dir} does not fit the model: missing tensors {missing[:5]}, "
            f"unexpected tensors {list(result.unexpected_keys)[:5]}"
        )
    if is_hyplora(config) and not any(
        isinstance(module, HypLoraLinear) and adapter_name in module.lora_A for module in peft_model.modules()
    ):
        raise HypLoraUserError(f"no HypLoRA layer was created for adapter {adapter_dir}")
    if not is_trainable:
        peft_model.eval()
    return peft_model


def _merge_separate_scalars(peft_model, state: dict, adapter_name: str) -> dict:
    """Adapters saved before ``lora_log_scales`` existed hold ``lora_curvature`` and ``lora_feature_scale`` as two
    1-element tensors per layer; where the layer now keeps both in ``lora_log_scales``, join them."""
    for name, module in peft_model.named_modules():
        if isinstance(module, HypLoraLinear) and adapter_name in module.lora_log_scales:
            parts = [f"{name}.lora_curvature", f"{name}.lora_feature_scale"]
            if f"{name}.lora_log_scales" not in state and all(key in state for key in parts):
                state[f"{name}.lora_log_scales"] = torch.cat([state.pop(key).reshape(1).float() for key in parts])
    return state


def is_hyplora(config) -> bool:
    return isinstance(config, HypLoraConfig)
