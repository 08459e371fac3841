"""The HypLoRA adapter: config, layer, branch functions and loading, on top of stock peft."""

from .config import VARIANTS, HypLoraConfig
from .io import load_adapter, read_adapter_config
from .layer import HypLoraLinear, HypLoraMergeError

__all__ = ["VARIANTS", "HypLoraConfig", "HypLoraLinear", "HypLoraMergeError", "load_adapter", "read_adapter_config"]
