"""The resolved training configuration: defaults < recipe (YAML) < command-line flags.

`TrainConfig` holds everything needed to reproduce a run; it is written to ``<output dir>/config.json``.
Recipes are YAML mappings of `TrainConfig` fields, shipped in ``hyplora/recipes/`` (``--recipe NAME``) or
given as a file path. Defaults are the paper's settings (r=32, q/k/v/up/down, lr 3e-4, 3 epochs, batch 4 with
4 accumulation steps = 16, warmup 100, cutoff 256, alpha 64 for LoRA/DoRA and 128 for HypLoRA).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HypLoraUserError
from ..models import DEFAULT_MODEL

METHODS = ("hyplora", "lora", "dora")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
)
VARIANTS = ("lorentz", "lorentz-full", "stereographic")
DEFAULT_ALPHA = {"lora": 64.0, "dora": 64.0, "hyplora": 128.0}
PAPER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    # what to train
    model: str = DEFAULT_MODEL
    data: str = "builtin"
    data_dir: str | None = None
    output_dir: str | None = None
    recipe: str | None = None
    # data processing
    template: str = "alpaca"
    cutoff_len: int = 256
    max_train_samples: int | None = None
    builtin_size: int = 2000
    dedup: bool = True
    # adapter
    method: str = "hyplora"
    rank: int = 32
    lora_alpha: float | None = None  # None: the method's default (DEFAULT_ALPHA)
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(PAPER_TARGET_MODULES))
    # HypLoRA only
    variant: str = "lorentz"
    curvature: float = 1.0
    learn_curvature: bool = True
    feature_scale: float | None = None
    learn_feature_scale: bool = True
    max_radius: float = 12.0
    compat: str | None = None
    # optimisation
    learning_rate: float = 3e-4
    num_epochs: float = 3.0
    batch_size: int = 4  # per device (the "micro batch")
    gradient_accumulation_steps: int = 4
    warmup_steps: int = 100
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: int = -1  # > 0 overrides num_epochs
    seed: int = 42
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    torch_compile: bool = False  # compile the model with torch.compile (inductor) through the Trainer
    # bookkeeping
    logging_steps: int = 1
    save_steps: int = 200
    save_total_limit: int | None = 2
    dataloader_num_workers: int = 0
    trust_remote_code: bool = False

    # ------------------------------------------------------------------ helpers
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps

    def validate(self) -> "TrainConfig":
        def need(cond: bool, message: str):
            if not cond:
                raise HypLoraUserError(message)

        need(self.method in METHODS, f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        need(self.precision in PRECISIONS, f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        need(self.lr_scheduler in SCHEDULERS, f"unknown scheduler {self.lr_scheduler!r}; choose from {', '.join(SCHEDULERS)}")
        need(self.variant in VARIANTS, f"unknown HypLoRA variant {self.variant!r}; choose from {', '.join(VARIANTS)}")
        need(self.template in ("alpaca", "chat"), f"unknown template {self.template!r}; choose alpaca or chat")
        need(self.compat in (None, "reference"), f"unknown compat mode {self.compat!r}; only 'reference'")
        need(self.rank >= 1, f"rank must be >= 1, got {self.rank}")
        need(self.lora_alpha is None or self.lora_alpha > 0, f"alpha must be > 0, got {self.lora_alpha}")
        need(0.0 <= self.lora_dropout < 1.0, f"dropout must be in [0, 1), got {self.lora_dropout}")
        need(bool(self.target_modules), "no target modules given")
        need(self.learning_rate > 0, f"learning rate must be > 0, got {self.learning_rate}")
        need(self.num_epochs > 0 or self.max_steps > 0, "give epochs > 0 or max steps > 0")
        need(self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}")
        need(self.gradient_accumulation_steps >= 1, "gradient accumulation steps must be >= 1")
        need(self.warmup_steps >= 0, f"warmup steps must be >= 0, got {self.warmup_steps}")
        need(self.cutoff_len >= 2, f"cutoff length must be >= 2, got {self.cutoff_len}")
        need(self.max_train_samples is None or self.max_train_samples >= 1, "max train samples must be >= 1")
        need(self.builtin_size >= 1, "builtin size must be >= 1")
        need(self.logging_steps >= 1, "logging steps must be >= 1")
        need(self.save_steps >= 1, "save steps must be >= 1")
        need(self.save_total_limit is None or self.save_total_limit >= 1, "save total limit must be >= 1")
        return self


def _coerce(name: str, value, source: str):
    """Check a recipe/CLI value against the field's type and convert where it is unambiguous."""
    default = getattr(TrainConfig(), name)
    if name == "target_modules":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise HypLoraUserError(f"{source}: target_modules must be a list of module names")
        return value
    if value is None:
        return None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise HypLoraUserError(f"{source}: {name} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool) and name != "lora_alpha":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise HypLoraUserError(f"{source}: {name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, float) or name in ("lora_alpha", "feature_scale"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise HypLoraUserError(f"{source}: {name} must be a number, got {value!r}")
        try:
            return float(value)
        except ValueError as exc:
            raise HypLoraUserError(f"{source}: {name} must be a number, got {value!r}") from exc
    if name == "max_train_samples":
        if isinstance(value, bool) or not isinstance(value, int):
            raise HypLoraUserError(f"{source}: {name} must be an integer, got {value!r}")
        return value
    if not isinstance(value, (str, int, float)):
        raise HypLoraUserError(f"{source}: {name} must be text, got {value!r}")
    return str(value)


def apply_overrides(config: TrainConfig, values: dict, source: str) -> TrainConfig:
    known = set(TrainConfig.field_names())
    unknown = sorted(set(values) - known)
    if unknown:
        raise HypLoraUserError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(config, **{k: _coerce(k, v, source) for k, v in values.items()})


# ---------------------------------------------------------------------------------------------- recipes
def recipes_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "recipes"


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def load_recipe(name_or_path: str) -> dict:
    """A recipe's settings: a packaged recipe by name, or a YAML file."""
    import yaml

    path = Path(name_or_path).expanduser()
    if not path.is_file():
        packaged = recipes_dir() / f"{name_or_path}.yaml"
        if not packaged.is_file():
            raise HypLoraUserError(f"unknown recipe {name_or_path!r}; packaged recipes: {', '.join(list_recipes())}")
        path = packaged
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HypLoraUserError(f"recipe {path}: not valid YAML: {exc}") from exc
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise HypLoraUserError(f"recipe {path}: expected a mapping of settings")
    values.pop("description", None)
    return values


def default_output_dir(config: TrainConfig) -> str:
    stem = Path(config.recipe).stem if config.recipe else f"{config.method}-{Path(config.data).stem}"
    return str(Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")


def resolve_config(overrides: dict | None = None, recipe: str | None = None, base: dict | None = None) -> TrainConfig:
    """Defaults (or a saved ``base`` config) < recipe < overrides; fills alpha and the output directory."""
    overrides = dict(overrides or {})
    recipe = overrides.pop("recipe", recipe)
    config = TrainConfig()
    if base:
        config = apply_overrides(config, base, "saved config")
    if recipe:
        config = apply_overrides(config, load_recipe(recipe), f"recipe {recipe}")
        config.recipe = recipe
    config = apply_overrides(config, overrides, "command line")
    if config.lora_alpha is None and config.method in DEFAULT_ALPHA:
        config.lora_alpha = DEFAULT_ALPHA[config.method]
    if not config.output_dir:
        config.output_dir = default_output_dir(config)
    return config.validate()


# ---------------------------------------------------------------------------------------------- atomic files
def write_json_atomic(path: str | os.PathLike, payload) -> None:
    """Write JSON to a temporary file in the same directory, flush it to disk, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
