"""`HypLoraConfig`: a `peft.LoraConfig` whose targeted linear layers compute a hyperbolic low-rank branch."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Literal, Optional

import torch.nn as nn
from peft import LoraConfig
from peft.utils import CONFIG_NAME, PeftType

VARIANTS = ("lorentz", "lorentz-full", "stereographic")
COMPAT_MODES = (None, "reference")

# The saved adapter_config.json names this peft_type instead of LORA. Stock PEFT then refuses to load the
# adapter (KeyError: 'HYPLORA') instead of silently loading it as plain LoRA and ignoring the geometry;
# `hyplora.load_adapter` and `HypLoraConfig.from_pretrained` read it.
SAVED_PEFT_TYPE = "HYPLORA"

_SUPPORTED_INIT = (True, False, "gaussian")


@dataclass
class HypLoraConfig(LoraConfig):
    """Configuration of a HypLoRA adapter; every `peft.LoraConfig` option keeps its meaning.

    ``peft_type`` stays ``LORA`` in memory, so Trainer, TRL and accelerate treat the model as a LoRA model.
    Targeted ``nn.Linear`` layers become `hyplora.HypLoraLinear`; any other targeted layer type is an error.
    """

    variant: Literal["lorentz", "lorentz-full", "stereographic"] = field(
        default="lorentz",
        # Declared a LoRA variant so that a stock peft LoRA layer refuses this config (instead of silently
        # building plain LoRA) when a HypLoRA adapter is added to an already LoRA-wrapped layer.
        metadata={"help": f"Hyperbolic branch: one of {VARIANTS}.", "is_lora_variant": True},
    )
    curvature: float = field(
        default=1.0,
        metadata={"help": "Initial K of the hyperboloid L_K (curvature -1/K). With compat='reference', the "
                  "released code's raw value k (K = softplus(k) + 1e-6)."},
    )
    learn_curvature: bool = field(default=True, metadata={"help": "Learn K (parameterised K = K0 exp(rho), rho=0)."})
    feature_scale: Optional[float] = field(
        default=None,
        metadata={"help": "Initial scale s the input is divided by before the map (None: sqrt(in_features))."},
    )
    learn_feature_scale: bool = field(default=True, metadata={"help": "Learn s (parameterised s = s0 exp(sigma))."})
    max_radius: float = field(
        default=12.0,
        metadata={"help": "Largest geodesic distance from the origin, in units of sqrt(K), that an input is "
                  "mapped to (guards sinh/cosh overflow; the released code uses 12)."},
    )
    compat: Optional[str] = field(
        default=None,
        metadata={"help": "None (correct math) or 'reference': reproduce the paper's released code exactly."},
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.LORA
        problems = []
        if self.variant not in VARIANTS:
            problems.append(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.compat not in COMPAT_MODES:
            problems.append(f"compat must be None or 'reference', got {self.compat!r}")
        if self.compat == "reference" and self.variant == "lorentz-full":
            problems.append("compat='reference' exists for 'lorentz' and 'stereographic' only: the released code "
                            "has no 'lorentz-full' variant")
        if not (isinstance(self.curvature, (int, float)) and math.isfinite(self.curvature)):
            problems.append(f"curvature must be a finite number, got {self.curvature!r}")
        elif self.compat is None and self.curvature <= 0:
            problems.append(f"curvature K must be > 0, got {self.curvature}")
        elif self.compat == "reference" and self.variant == "stereographic" and self.curvature == 0:
            problems.append("the released stereographic code divides by sqrt(|k|): curvature must be non-zero")
        if self.feature_scale is not None and not (math.isfinite(self.feature_scale) and self.feature_scale > 0):
            problems.append(f"feature_scale must be a positive number or None, got {self.feature_scale!r}")
        if not (math.isfinite(self.max_radius) and 0 < self.max_radius <= 40):
            problems.append(f"max_radius must be in (0, 40] (float32 overflows beyond), got {self.max_radius!r}")
        if self.use_dora:
            problems.append("use_dora cannot be combined with HypLoRA")
        if self.lora_bias:
            problems.append("lora_bias is not supported by HypLoRA")
        if self.fan_in_fan_out:
            problems.append("fan_in_fan_out layers (GPT-2 Conv1D) are not supported by HypLoRA; target nn.Linear")
        if self.init_lora_weights not in _SUPPORTED_INIT:
            problems.append(f"init_lora_weights must be one of {_SUPPORTED_INIT} for HypLoRA, "
                            f"got {self.init_lora_weights!r}")
        if problems:
            raise ValueError("invalid HypLoraConfig: " + "; ".join(problems))

        from .layer import HypLoraLinear, reject_unsupported_layer

        # Public extension point of peft's LoraConfig: the first matching entry builds the layer, so nn.Linear
        # (and its subclasses, e.g. quantized linears) gets HypLoRA and everything else a clear error.
        self._register_custom_module({nn.Linear: HypLoraLinear, nn.Module: reject_unsupported_layer})

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        super().save_pretrained(save_directory, **kwargs)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        saved["peft_type"] = SAVED_PEFT_TYPE
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(saved, handle, indent=2, sort_keys=True)
        os.replace(tmp, path)

    @classmethod
    def from_peft_type(cls, **kwargs):
        kwargs = dict(kwargs)
        peft_type = kwargs.pop("peft_type", SAVED_PEFT_TYPE)
        if str(peft_type) not in (SAVED_PEFT_TYPE, "LORA", "PeftType.LORA"):
            raise ValueError(f"not a HypLoRA adapter config: peft_type is {peft_type!r}")
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"unknown HypLoRA config keys {unknown}: the adapter was saved by a newer hyplora or peft; upgrade"
            )
        return cls(**kwargs)


def is_hyplora_config_file(adapter_dir: str) -> bool:
    """Whether ``adapter_dir/adapter_config.json`` describes a HypLoRA adapter."""
    path = os.path.join(adapter_dir, CONFIG_NAME)
    with open(path, encoding="utf-8") as handle:
        return json.load(handle).get("peft_type") == SAVED_PEFT_TYPE
