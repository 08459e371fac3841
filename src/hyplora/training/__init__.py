"""The training pipeline: resolved configs and recipes, adapter factory, Trainer setup, output directory."""

from .config import METHODS, TrainConfig, list_recipes, load_recipe, resolve_config
from .trainer import TrainResult, last_checkpoint, read_log, train

__all__ = [
    "METHODS", "TrainConfig", "TrainResult", "last_checkpoint", "list_recipes", "load_recipe", "read_log",
    "resolve_config", "train",
]
