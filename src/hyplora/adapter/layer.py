"""`HypLoraLinear`: the peft LoRA layer that adds a hyperbolic low-rank branch to a frozen ``nn.Linear``."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from peft.tuners.lora.layer import LoraLayer

from . import functional as Fn

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


class _ClipGrad(torch.autograd.Function):
    """Identity in the forward pass; clamps the incoming gradient to ``[-bound, bound]`` in the backward pass."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.bound = bound
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.clamp(-ctx.bound, ctx.bound), None


def _autocast_off(device_type: str):
    """A context that disables autocast where it is on (entering one costs more than the check)."""
    if device_type not in _AUTOCAST_DEVICES:
        return nullcontext()
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        enabled = True
    return torch.autocast(device_type=device_type, enabled=False) if enabled else nullcontext()


class BranchSettings(NamedTuple):
    """What an adapter's branch computes, fixed when the adapter is added to a layer."""

    variant: str
    compat: str | None
    curvature: float  # K0: K = K0 exp(rho)
    feature_scale: float  # s0: s = s0 exp(sigma)
    max_radius: float


# The distinct settings of every HypLoRA layer in the process, by number; a layer keeps the number for each adapter.
# Under torch.compile, dynamo guards every Python value the forward reads, once per path by which it is read, and
# checks those guards before every call of the compiled model. Read as ``_SETTINGS[number]``, one set of settings is
# guarded once for all the layers that share it, where a dict of each layer's own was guarded in every layer; a
# small model's compiled decoding step is bound by that check (benchmarks/RESULTS.md, sixth session:
# compiled_step_host.py counts the guards). A dict, not a list: a lookup by key is guarded on that key alone, so
# settings added later (another model) leave compiled models' guards passing. Entries are never removed.
_SETTINGS: dict[int, BranchSettings] = {}


def _settings_number(settings: BranchSettings) -> int:
    for number, known in _SETTINGS.items():
        if known == settings:
            return number
    _SETTINGS[len(_SETTINGS)] = settings
    return len(_SETTINGS) - 1


class HypLoraMergeError(ValueError):
    """Raised by merge-related calls: a HypLoRA branch is not a weight matrix."""

    def __init__(self, what: str):
        super().__init__(
            f"{what} is impossible for HypLoRA: the branch scales B A x by factors that depend on |x| and |B A x| "
            "(it is nonlinear in x), so no weight matrix W' gives W' x = W x + branch(x) for every x. Keep the "
            "adapter unmerged; unload() removes it and returns the base model."
        )


def reject_unsupported_layer(target: nn.Module, adapter_name: str, **kwargs) -> nn.Module:
    """Dispatch entry for every targeted layer that is not an ``nn.Linear``."""
    name = kwargs.get("target_name") or "?"
    raise ValueError(
        f"HypLoRA applies to nn.Linear layers only, but target module {name!r} is a {type(target).__name__}; "
        "choose target_modules that name linear layers (e.g. q_proj, k_proj, v_proj, up_proj, down_proj)"
    )


class HypLoraLinear(nn.Module, LoraLayer):
    """A frozen linear layer plus, for each active HypLoRA adapter, ``scaling * branch(x)`` (see `functional`).

    Per adapter it holds LoRA's ``lora_A``/``lora_B`` and the learned scalars, in float32:
    ``lora_log_scales = (rho, sigma)`` with ``K = K0 exp(rho)`` and ``s = s0 exp(sigma)`` when both are learned
    (one parameter: each parameter costs host time in every training step, in the optimizer, in autograd's
    gradient accumulation and in CUDA graphs' input checks); otherwise, and under compat="reference", one
    1-element parameter for each one learned: ``lora_curvature`` (``rho``; the raw ``k`` under
    compat="reference") and ``lora_feature_scale`` (``sigma``; the raw ``s`` under compat="reference"). They start
    at values that reproduce the configured ``K0`` and ``s0`` exactly. `io.load_adapter` loads adapters saved before
    ``lora_log_scales`` existed (two 1-element tensors) into it.
    """

    adapter_layer_names = LoraLayer.adapter_layer_names + ("lora_curvature", "lora_feature_scale", "lora_log_scales")
    other_param_names = LoraLayer.other_param_names + ("hyplora_branch_settings", "hyplora_settings_index")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config, r: int = 0, lora_alpha: int = 1, **kwargs):
        super().__init__()
        LoraLayer.__init__(self, base_layer, **kwargs)
        self.fan_in_fan_out = False
        self.lora_curvature = nn.ParameterDict({})
        self.lora_feature_scale = nn.ParameterDict({})
        self.lora_log_scales = nn.ParameterDict({})
        self.hyplora_branch_settings: dict[str, BranchSettings] = {}
        self.hyplora_settings_index: dict[str, int] = {}  # their keys in _SETTINGS, which the forward reads
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    # ----------------------------------------------------------------------------------------------- set-up
    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config, **kwargs) -> None:
        from .config import HypLoraConfig

        if not isinstance(config, HypLoraConfig):
            raise ValueError(
                f"cannot add the non-HypLoRA adapter {adapter_name!r} to a layer that holds HypLoRA adapters: "
                "peft would build it with HypLoRA's layer class. Use HypLoraConfig for every adapter of this model."
            )
        if r <= 0:
            raise ValueError(f"`r` should be a positive integer value but the value passed is {r}")
        if self.in_features is None or self.out_features is None:
            raise ValueError(f"cannot read in/out features of {type(self.get_base_layer()).__name__}")

        full = config.variant == "lorentz-full"
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.lora_dropout[adapter_name] = nn.Dropout(p=config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        # "lorentz-full": A reads the whole (d+1)-point, B the whole (r+1)-point, time coordinates included.
        self.lora_A[adapter_name] = nn.Linear(self.in_features + full, r, bias=False)
        self.lora_B[adapter_name] = nn.Linear(r + full, self.out_features, bias=False)
        self.lora_bias[adapter_name] = False
        self.use_dora[adapter_name] = False
        self.use_rslora[adapter_name] = config.use_rslora
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if config.use_rslora else lora_alpha / r
        self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)

        feature_scale = config.feature_scale if config.feature_scale is not None else math.sqrt(self.in_features)
        settings = BranchSettings(variant=config.variant, compat=config.compat, curvature=float(config.curvature),
                                  feature_scale=float(feature_scale), max_radius=float(config.max_radius))
        self.hyplora_branch_settings[adapter_name] = settings
        self.hyplora_settings_index[adapter_name] = _settings_number(settings)
        # Created after the move above, which would cast them to the base layer's (possibly bfloat16) dtype.
        device = self.lora_A[adapter_name].weight.device
        reference = config.compat == "reference"
        uses_scale = not (reference and config.variant == "stereographic")
        if not reference and config.learn_curvature and config.learn_feature_scale:
            self.lora_log_scales[adapter_name] = nn.Parameter(torch.zeros(2, dtype=torch.float32, device=device))
        else:
            if config.learn_curvature:
                start = float(config.curvature) if reference else 0.0
                self.lora_curvature[adapter_name] = nn.Parameter(
                    torch.tensor([start], dtype=torch.float32, device=device))
                # compat="reference", "lorentz": its gradient is clipped to [-0.01, 0.01] in `hyperbolic_branch`
            if config.learn_feature_scale and uses_scale:
                start = float(feature_scale) if reference else 0.0
                self.lora_feature_scale[adapter_name] = nn.Parameter(
                    torch.tensor([start], dtype=torch.float32, device=device))
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    @property
    def hyplora_settings(self) -> dict[str, dict[str, Any]]:
        """Each adapter's settings (variant, compat, curvature, feature_scale, max_radius), as dicts (a copy)."""
        return {name: settings._asdict() for name, settings in self.hyplora_branch_settings.items()}

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        # the numbers are keys of this process's table: an unpickled layer (another process) takes them anew
        self.hyplora_settings_index = {name: _settings_number(settings)
                                       for name, settings in self.hyplora_branch_settings.items()}

    def _settings(self, adapter_name: str) -> BranchSettings:
        return _SETTINGS[self.hyplora_settings_index[adapter_name]]

    # ------------------------------------------------------------------------------------ learned scalars
    def _constant(self, value: float, like: torch.Tensor, size: int = 1) -> torch.Tensor:
        """A cached tensor of ``size`` copies of ``value``: creating one per call would copy host->device and stall
        a GPU stream.

        Not cached while torch.compile traces: a tensor made there is an output of the compiled graph, which
        CUDA graphs ("reduce-overhead") overwrite on their next replay. In the graph it is a constant fill."""
        if Fn.kernels.is_compiling():
            return torch.full((size,), value, dtype=like.dtype, device=like.device)
        cache = self._caches.setdefault("hyplora_constants", {})
        key = (value, size, like.device, like.dtype)
        if key not in cache:
            cache[key] = torch.full((size,), value, dtype=like.dtype, device=like.device)
        return cache[key]

    def curvature(self, adapter_name: str) -> torch.Tensor:
        """K of the adapter's hyperboloid L_K (curvature -1/K), as a float32 1-element tensor."""
        settings = self._settings(adapter_name)
        if adapter_name in self.lora_log_scales:
            return torch.exp(self.lora_log_scales[adapter_name][0:1].float()) * settings.curvature
        param = self.lora_curvature[adapter_name] if adapter_name in self.lora_curvature else None
        if settings.compat == "reference":
            weight = self.lora_A[adapter_name].weight
            raw = param.float() if param is not None else self._constant(settings.curvature, weight.float())
            return Fn.reference_curvature(raw) if settings.variant == "lorentz" else raw
        if param is None:
            return self._constant(settings.curvature, self.lora_A[adapter_name].weight.float())
        return torch.exp(param.float()) * settings.curvature

    def feature_scale(self, adapter_name: str) -> torch.Tensor:
        """The scale s the input is divided by before it is mapped to the hyperboloid (1-element tensor)."""
        settings = self._settings(adapter_name)
        if adapter_name in self.lora_log_scales:
            return torch.exp(self.lora_log_scales[adapter_name][1:2].float()) * settings.feature_scale
        param = self.lora_feature_scale[adapter_name] if adapter_name in self.lora_feature_scale else None
        if param is None:
            return self._constant(settings.feature_scale, self.lora_A[adapter_name].weight.float())
        if settings.compat == "reference":
            return param.float()
        return torch.exp(param.float()) * settings.feature_scale

    def _log_ratios(self, adapter_name: str, like: torch.Tensor) -> torch.Tensor:
        """``(rho, sigma)`` of ``K = K0 exp(rho)``, ``s = s0 exp(sigma)`` in ``like``'s dtype: the learned
        parameters, with a 0 for one not learned.

        Looks them up in the ParameterDicts' ``_parameters``: their ``__contains__`` and ``__getitem__`` add seven
        guards per layer under torch.compile (see `_SETTINGS`)."""
        param = self.lora_log_scales._parameters.get(adapter_name)
        if param is not None:
            return param if param.dtype == like.dtype else param.to(like.dtype)
        parts = [params._parameters.get(adapter_name) for params in (self.lora_curvature, self.lora_feature_scale)]
        if parts[0] is None and parts[1] is None:
            return self._constant(0.0, like, size=2)
        return torch.cat([part.reshape(1).to(like.dtype) if part is not None else self._constant(0.0, like)
                          for part in parts])

    # ------------------------------------------------------------------------------------------- forward
    def hyperbolic_branch(self, x: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """``scaling * branch(dropout(x))`` for one adapter, computed in float32 (float64 if the adapter is)."""
        settings = self._settings(adapter_name)
        A = self.lora_A[adapter_name].weight
        B = self.lora_B[adapter_name].weight
        dtype = torch.float64 if A.dtype == torch.float64 else torch.float32
        with _autocast_off(x.device.type):
            # x keeps its dtype: the fast path casts it inside (and saves it uncast for backward).
            x = self.lora_dropout[adapter_name](x)
            A, B = A.to(dtype), B.to(dtype)
            scaling = self.scaling[adapter_name]
            if settings.compat is None and settings.variant in Fn.GATED_VARIANTS:
                # K = K0 exp(rho) and s = s0 exp(sigma) are formed inside the fused function (no scalar launches)
                return Fn.gated_branch(
                    settings.variant, x, A, B, self._log_ratios(adapter_name, A), settings.curvature,
                    settings.feature_scale, scaling, settings.max_radius,
                )
            K = self.curvature(adapter_name).to(dtype)
            if settings.compat == "reference":
                x = x.to(dtype)  # the released code computes in float32
                if settings.variant == "lorentz":
                    raw_k = self.lora_curvature[adapter_name] if adapter_name in self.lora_curvature else None
                    # The released code clips this parameter's gradient to [-0.01, 0.01]. Done in the graph, not by a
                    # hook on the Parameter: FSDP and ZeRO-3 swap the Parameter for sharded/gathered copies (and
                    # deepcopy drops tensor hooks), which would silently lose the clip.
                    raw_k = (_ClipGrad.apply(raw_k.to(dtype), 0.01) if raw_k is not None
                             else self._constant(settings.curvature, x))
                    s = self.feature_scale(adapter_name).to(dtype)
                    return Fn.reference_lorentz_branch(x, A, B, raw_k, s, scaling)
                return Fn.reference_stereographic_branch(x, A, B, K, scaling)
            s = self.feature_scale(adapter_name).to(dtype)
            branch = Fn.BRANCHES[settings.variant]
            return branch(x, A, B, K, s, scaling, settings.max_radius)

    def _add_branch_in_place(self, result: torch.Tensor, x: torch.Tensor, adapter_name: str) -> bool:
        """Without autograd, on the Triton path: ``result += scaling * branch(dropout(x))`` by one kernel for few
        tokens, else LoRA's two matmuls and one kernel (`functional.add_gated_branch_`). False, doing nothing, where
        that does not apply."""
        settings = self._settings(adapter_name)
        A = self.lora_A[adapter_name].weight
        if settings.compat is not None or not Fn.adds_in_place(result, settings.variant, x, A):
            return False
        dropout = self.lora_dropout[adapter_name]
        if not isinstance(dropout, nn.Identity):  # a module call costs host time in every decoding step
            x = dropout(x)
        with _autocast_off(x.device.type):
            Fn.add_gated_branch_(
                result, settings.variant, x, A, self.lora_B[adapter_name].weight,
                self._log_ratios(adapter_name, A), settings.curvature, settings.feature_scale,
                self.scaling[adapter_name], settings.max_radius,
            )
        return True

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        adapter_names = kwargs.pop("adapter_names", None)
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        if adapter_names is not None:
            return self._add_mixed_batch_branches(x, result, adapter_names)
        for active_adapter in self.active_adapters:
            if active_adapter in self.lora_A:
                # never under torch.compile (the Triton path steps aside there): not looked at, fewer guards
                if (not torch.is_grad_enabled() and not Fn.kernels.is_compiling()
                        and self._add_branch_in_place(result, x, active_adapter)):
                    continue
                branch = self.hyperbolic_branch(x, active_adapter)
                # the sum is formed in float32 and rounded once to the base layer's dtype, as peft's LoRA does
                if torch.is_grad_enabled():
                    result = (result + branch).to(result.dtype)
                else:  # decoding: the same in place (one kernel and one allocation fewer)
                    result.add_(branch)
        return result

    def _add_mixed_batch_branches(self, x: torch.Tensor, result: torch.Tensor, adapter_names: list[str]):
        """peft's ``adapter_names=[...]`` inference: row i of the batch uses adapter ``adapter_names[i]``."""
        result = result.clone()
        for adapter in set(adapter_names):
            if adapter == "__base__" or adapter not in self.lora_A:
                continue
            rows = [i for i, name in enumerate(adapter_names) if name == adapter]
            result[rows] = result[rows] + self.hyperbolic_branch(x[rows], adapter).to(result.dtype)
        return result

    # ---------------------------------------------------------------------------------- merging: impossible
    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise HypLoraMergeError("merging")

    def unmerge(self) -> None:
        raise HypLoraMergeError("unmerging")

    def get_delta_weight(self, adapter_name) -> torch.Tensor:
        raise HypLoraMergeError("a delta weight")

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        return False

    def __repr__(self) -> str:
        return "hyplora." + super().__repr__()
