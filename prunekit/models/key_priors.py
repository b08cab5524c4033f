"""The AST with learned key priors (FiAK, docs/methods.md section 3): a prior over the keys of
every head, added to the attention logits as a log-prior, and keys pruned from it.

Attention read as a mixture whose components are the keys: plain softmax attention is the
posterior under a uniform prior; here head h of layer l has its own log-prior ``theta[l][h, j]``
over the patch keys j, added to the logits before the softmax. The CLS and distillation keys
(the first two tokens) have no prior (a fixed 0 in the logits) and are never pruned. With
``theta = 0`` the model's outputs equal the plain model's bit for bit (the additive mask is all
zeros). Our choice: the prior is unnormalised relative to the two extra keys, so it is reported
over the patch keys as ``softmax(theta[l][h])`` (``prior_table``).

Pruning keeps a fixed set of keys for every clip:

* ``layer``: one set of kept patch positions per layer; K and V are computed only for them
  (``ast.attend_to_keys``), so the K/V projections, Q.K^T and A.V shrink for real; every
  token is still a query;
* ``head``: one set per head, applied as ``-inf`` in the additive mask; K and V are computed for
  every token, so only the work the mask makes useless (the dropped scores and value mixing)
  would be saved, and a dense kernel does not skip it.

The weights and module tree are the stock ``ASTForAudioClassification``'s (dense or head-pruned)
plus ``key_priors``; the settings are one config field (``prunekit_keys``), from which
``KeyPriorASTForAudioClassification.__init__`` rebuilds the shapes, so ``load_model`` reloads a
key-prior model from safetensors with no pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import ASTForAudioClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from prunekit.errors import ConfigurationError, ModelError
from prunekit.models import anatomy, token_pruned
from prunekit.models.ast import attend_to_keys, backbone, install_structure
from prunekit.models.family import config_structure

__all__ = [
    "EXTRA_KEYS",
    "GRANULARITIES",
    "KEY_FIELD",
    "KeyPriorASTForAudioClassification",
    "KeySettings",
    "LayerKeys",
    "heads_per_layer",
    "install_key_priors",
    "model_class_for",
    "run_keys",
]

KEY_FIELD = "prunekit_keys"
EXTRA_KEYS = 2  # CLS and distillation: no prior, never pruned
GRANULARITIES = ("none", "layer", "head")


@dataclass(frozen=True)
class KeySettings:
    """What ``config.prunekit_keys`` holds: the patch keys the priors cover, the pruning
    granularity and, for ``layer``, how many patch keys each layer keeps (the shapes to rebuild).
    ``sparsity``, ``threshold`` and ``scores`` say how the kept keys were chosen (for people)."""

    patches: int
    granularity: str = "none"
    kept: tuple[int, ...] | None = None
    sparsity: float = 0.0
    threshold: str | None = None
    scores: str | None = None

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ConfigurationError(
                f"Key pruning granularity must be one of {', '.join(GRANULARITIES)}, got {self.granularity!r}"
            )
        if self.patches < 1:
            raise ModelError(f"Key priors need at least one patch key, got {self.patches}")
        if (self.granularity == "layer") != (self.kept is not None):
            raise ModelError(
                f"config.{KEY_FIELD}: 'kept' (patch keys kept per layer) goes with granularity 'layer' "
                f"only; got granularity {self.granularity!r} and kept {self.kept}"
            )
        if self.kept is not None and any(not 0 <= k <= self.patches for k in self.kept):
            raise ModelError(f"config.{KEY_FIELD}: kept counts {self.kept} must lie in 0..{self.patches}")

    @classmethod
    def from_config(cls, config) -> KeySettings:
        raw = getattr(config, KEY_FIELD, None)
        if not isinstance(raw, dict):
            raise ModelError(f"A key-prior model needs config.{KEY_FIELD} (a dict), got {raw!r}")
        try:
            kept = raw.get("kept")
            return cls(
                int(raw["patches"]),
                str(raw.get("granularity", "none")),
                None if kept is None else tuple(int(k) for k in kept),
                float(raw.get("sparsity", 0.0)),
                raw.get("threshold"),
                raw.get("scores"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"config.{KEY_FIELD} is malformed ({exc!r}): {raw}") from exc

    def to_dict(self) -> dict:
        return {
            "patches": self.patches,
            "granularity": self.granularity,
            "kept": None if self.kept is None else list(self.kept),
            "sparsity": self.sparsity,
            "threshold": self.threshold,
            "scores": self.scores,
        }


class LayerKeys(nn.Module):
    """One layer's log-prior ``log_prior`` (h, N) over its patch keys and, once pruned, which keys
    stay: ``key_index`` (2 + k,) token positions (granularity ``layer``) or ``key_mask`` (h, N)
    booleans, True = kept (granularity ``head``)."""

    def __init__(self, heads: int, patches: int, granularity: str = "none", kept: int | None = None):
        super().__init__()
        self.log_prior = nn.Parameter(torch.zeros(heads, patches))  # uniform: the plain model
        if granularity == "layer":
            index = torch.arange(EXTRA_KEYS + (kept if kept is not None else patches))
            self.register_buffer("key_index", index)  # overwritten by pruning or loading
        if granularity == "head":
            self.register_buffer("key_mask", torch.ones(heads, patches, dtype=torch.bool))

    @property
    def heads(self) -> int:
        return self.log_prior.shape[0]

    def bias(self) -> torch.Tensor:
        """The additive logits over all keys (h, 2 + N): 0 for CLS and distillation, the log-prior
        for the patches, -inf where a head dropped a key."""
        theta = self.log_prior
        if hasattr(self, "key_mask"):
            theta = theta.masked_fill(~self.key_mask, float("-inf"))
        return nn.functional.pad(theta, (EXTRA_KEYS, 0))  # (h, 2 + N)

    def attend(
        self, block: nn.Module, hidden: torch.Tensor, shape: tuple[int, int, int], layer: int
    ) -> torch.Tensor:
        """The attention block's output (B, T, d) for its input ``hidden`` (B, T, d), with the
        prior added and the pruned keys left out. ``shape``: (heads, dqk, dv) of the block."""
        heads, qk_dim, v_dim = shape
        if heads != self.heads:
            raise ModelError(
                f"Layer {layer} has {heads} heads but its key priors cover {self.heads}; "
                "prune heads before adding key priors, not after"
            )
        length = hidden.shape[1]
        bias = self.bias().to(hidden.dtype)  # (h, 2 + N)
        index = getattr(self, "key_index", None)
        if index is None:
            mask = bias[None, :, None, :].expand(1, heads, length, bias.shape[-1])  # (1, h, T, T)
            return block(hidden, mask if heads else None)[0]
        bias = bias.index_select(1, index)  # (h, k)
        mask = bias[None, :, None, :].expand(1, heads, length, bias.shape[-1])  # (1, h, T, k)
        return attend_to_keys(block, hidden, heads, qk_dim, v_dim, index, mask)


def heads_per_layer(config) -> list[int]:
    """Heads of each layer as the config describes the model (head-pruned or dense)."""
    structure = config_structure(config)
    if structure is not None:
        return [s.heads for s in structure]
    return [config.num_attention_heads] * config.num_hidden_layers


def _layer_keys(config, settings: KeySettings) -> nn.ModuleList:
    heads = heads_per_layer(config)
    kept = settings.kept or (None,) * len(heads)
    if len(kept) != len(heads):
        raise ModelError(
            f"config.{KEY_FIELD} lists kept keys for {len(kept)} layers; the model has {len(heads)}"
        )
    return nn.ModuleList(LayerKeys(h, settings.patches, settings.granularity, k) for h, k in zip(heads, kept))


def run_keys(model: nn.Module, input_values: torch.Tensor) -> torch.Tensor:
    """Logits (B, C) of a key-prior ``model`` for input_values (B, frames, mels)."""
    ast = backbone(model)
    family = anatomy.family_of(model)
    hidden = ast.embeddings(input_values)  # (B, 2 + N, d)
    patches = hidden.shape[1] - EXTRA_KEYS
    expected = model.key_settings().patches
    if patches != expected:
        raise ModelError(
            f"The input gives {patches} patch tokens but the key priors cover {expected} "
            "(priors learned for another input length)"
        )
    for i, (layer, keys) in enumerate(zip(ast.layers, model.key_priors)):
        shape = family.heads(model, layer.attention)
        attended = keys.attend(layer.attention, layer.layernorm_before(hidden), shape, i)
        hidden = layer.dropout(attended) + hidden
        hidden = hidden + layer.dropout(layer.mlp(layer.layernorm_after(hidden)))
    sequence = ast.layernorm(hidden)  # (B, 2 + N, d)
    pooled = (sequence[:, 0] + sequence[:, 1]) / 2  # (B, d): AST's pooling of CLS and distillation
    return model.classifier(pooled)  # (B, C)


class KeyPriorASTForAudioClassification(ASTForAudioClassification):
    """``ASTForAudioClassification`` with a log-prior over the keys of every head, and keys
    pruned as ``config.prunekit_keys`` says. Rebuilds a head-pruned attention too when the config
    has ``prunekit_structure``, so head pruning and key priors stack and reload together."""

    def __init__(self, config) -> None:
        super().__init__(config)
        structure = anatomy.config_structure(config)
        if structure is not None:
            install_structure(self, structure)
        self.key_priors = _layer_keys(config, self.key_settings())
        self.post_init()

    def key_settings(self) -> KeySettings:
        return KeySettings.from_config(self.config)

    def forward(
        self, input_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs
    ) -> SequenceClassifierOutput:
        """input_values: (B, frames, mels); labels: (B,). Returns the logits (B, C) (and the loss)."""
        logits = run_keys(self, input_values)
        loss = self.loss_function(labels, logits, self.config, **kwargs) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def install_key_priors(model: nn.Module, settings: KeySettings) -> KeyPriorASTForAudioClassification:
    """Make ``model`` (in place) a key-prior model of ``settings`` with uniform priors and every
    key kept; a model that already has priors keeps them when their shapes still fit."""
    if getattr(model.config, token_pruned.TOKEN_FIELD, None) is not None:
        raise ModelError("Key priors need every patch token in every layer; this model is token-pruned")
    old = getattr(model, "key_priors", None)
    setattr(model.config, KEY_FIELD, settings.to_dict())
    weight = anatomy.classifier(model).weight
    layers = _layer_keys(model.config, settings).to(device=weight.device, dtype=weight.dtype)
    if old is not None:
        with torch.no_grad():
            for new, previous in zip(layers, old):
                new.log_prior.copy_(previous.log_prior)
    model.__class__ = KeyPriorASTForAudioClassification  # the state is the key_priors module
    model.key_priors = layers
    return model


def model_class_for(config) -> type[ASTForAudioClassification]:
    """The class that rebuilds a model from ``config``: key-prior when the config says so, else
    what ``token_pruned.model_class_for`` says (token-pruned, head-pruned or dense)."""
    if getattr(config, KEY_FIELD, None) is not None:
        if getattr(config, token_pruned.TOKEN_FIELD, None) is not None:
            raise ModelError(
                f"A config with both {KEY_FIELD} and {token_pruned.TOKEN_FIELD} is not supported"
            )
        return KeyPriorASTForAudioClassification
    return token_pruned.model_class_for(config)
