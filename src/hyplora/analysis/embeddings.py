"""Token vectors of a model: its input-embedding matrix and the final hidden layer's states of a prompt."""

from __future__ import annotations

import torch

from ..errors import HypLoraUserError


def input_embedding_matrix(model) -> torch.Tensor:
    """The (vocab, dim) input-embedding weight, detached, in float32 or better.

    Raises `HypLoraUserError` when the model has no input-embedding layer.
    """
    try:
        layer = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        layer = None
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise HypLoraUserError(
            f"model {type(model).__name__} has no input-embedding matrix (get_input_embeddings() gave "
            f"{type(layer).__name__}); the geometry analysis needs a model with token embeddings"
        )
    weight = weight.detach()
    return weight.float() if weight.dtype not in (torch.float32, torch.float64) else weight


@torch.no_grad()
def final_hidden_states(model, tokenizer, text: str) -> torch.Tensor:
    """Final hidden layer states (after the final norm, as returned by transformers) at the text's tokens.

    The model sees the text with its special tokens (e.g. Gemma's BOS), as in use; only the positions of the
    text's own tokens are returned, since a BOS state is an attention sink far from everything else.
    """
    encoded = tokenizer(text, return_tensors="pt", add_special_tokens=True, return_special_tokens_mask=True)
    special = encoded.pop("special_tokens_mask")[0].bool()
    device = next(model.parameters()).device
    outputs = model(input_ids=encoded["input_ids"].to(device),
                    attention_mask=encoded["attention_mask"].to(device), output_hidden_states=True)
    states = outputs.hidden_states[-1][0].float().cpu()
    return states[~special]
