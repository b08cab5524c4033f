"""An AST-base-shaped model folder: the paper's model size, random weights, written locally.

``MIT/ast-finetuned-speech-commands-v2`` is 12 layers x 12 heads x 768 with 128 mel bins, 128
frames (1 s at a 10 ms hop) and the 35 Speech Commands words. This writes a randomly initialised
model of that configuration with ``save_pretrained`` (and its feature-extractor settings) so the
app and the benchmarks can be exercised at real size offline. Its accuracy is chance: it is for
timings, memory and plumbing, never for accuracy claims.

    .venv/bin/python bench/ast_base.py [FOLDER]     # default cache/ast-base-speech-commands

``key_format="v4"`` writes the weight names transformers v4 used (and the hub still holds),
written out by hand, not by transformers' own conversion code.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from prunekit.data.synth import WORDS
from prunekit.store import cache_dir

__all__ = ["V4_NAMES", "ast_base_config", "v4_name", "write_folder"]

# The hub model's feature-extractor settings (its preprocessor_config.json).
EXTRACTOR = {"num_mel_bins": 128, "max_length": 128, "mean": -6.845978, "std": 5.5654526}

V4_NAMES = [
    (r"\.layers\.(\d+)\.attention\.q_proj\.", r".encoder.layer.\1.attention.attention.query."),
    (r"\.layers\.(\d+)\.attention\.k_proj\.", r".encoder.layer.\1.attention.attention.key."),
    (r"\.layers\.(\d+)\.attention\.v_proj\.", r".encoder.layer.\1.attention.attention.value."),
    (r"\.layers\.(\d+)\.attention\.o_proj\.", r".encoder.layer.\1.attention.output.dense."),
    (r"\.layers\.(\d+)\.mlp\.fc1\.", r".encoder.layer.\1.intermediate.dense."),
    (r"\.layers\.(\d+)\.mlp\.fc2\.", r".encoder.layer.\1.output.dense."),
    (r"\.layers\.(\d+)\.", r".encoder.layer.\1."),
]


def v4_name(key: str) -> str:
    """A transformers-v5 AST weight name as transformers v4 wrote it."""
    for pattern, repl in V4_NAMES:
        new = re.sub(pattern, repl, key)
        if new != key:
            return new
    return key


def ast_base_config() -> ASTConfig:
    """AST-base (768 x 12 layers x 12 heads, the ASTConfig defaults) shaped for 1 s Speech Commands."""
    return ASTConfig(
        num_mel_bins=EXTRACTOR["num_mel_bins"],
        max_length=EXTRACTOR["max_length"],
        num_labels=len(WORDS),
        id2label=dict(enumerate(WORDS)),
        label2id={w: k for k, w in enumerate(WORDS)},
    )


def write_folder(folder: str | Path, *, key_format: str = "v5", seed: int = 0) -> Path:
    """Write the random AST-base-shaped model and its feature extractor into ``folder``."""
    folder = Path(folder)
    torch.manual_seed(seed)
    model = ASTForAudioClassification(ast_base_config()).eval()
    if key_format == "v5":
        model.save_pretrained(folder)
    elif key_format == "v4":
        folder.mkdir(parents=True, exist_ok=True)
        model.config.to_json_file(folder / "config.json")
        state = {v4_name(k): v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        raise ValueError(f"key_format must be 'v4' or 'v5', got {key_format!r}")
    ASTFeatureExtractor(**EXTRACTOR, sampling_rate=16_000, do_normalize=True).save_pretrained(folder)
    return folder


if __name__ == "__main__":
    out = write_folder(sys.argv[1] if len(sys.argv) > 1 else cache_dir() / "ast-base-speech-commands")
    print(f"wrote {out}")
