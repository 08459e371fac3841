"""hyplora: hyperbolic low-rank fine-tuning (HypLoRA) of Hugging Face causal language models on stock PEFT."""

__version__ = "0.1.0"

from . import geometry  # noqa: E402
from .adapter import HypLoraConfig, HypLoraLinear, load_adapter  # noqa: E402

__all__ = ["HypLoraConfig", "HypLoraLinear", "load_adapter", "geometry", "__version__"]
