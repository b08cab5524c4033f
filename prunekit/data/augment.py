"""SpecAugment on spectrogram batches: the one implementation demo training and LoRA recovery share."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["spec_augment"]


def spec_augment(freq_mask: int, time_mask: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """SpecAugment with torchaudio's masks: per clip, one band of up to ``freq_mask`` mel bins and
    one of up to ``time_mask`` frames set to 0 (the normalised mean); the identity when both are 0.
    The returned function maps (B, frames, mels) to (B, frames, mels) and draws from torch's
    global generator (seed it for repeatable runs)."""
    if freq_mask < 0 or time_mask < 0:
        from prunekit.errors import ConfigurationError

        raise ConfigurationError(f"SpecAugment widths must be >= 0, got {freq_mask=}, {time_mask=}")
    if not (freq_mask or time_mask):
        return lambda x: x
    from torchaudio.transforms import FrequencyMasking, TimeMasking

    masks = nn.Sequential(
        *([FrequencyMasking(freq_mask, iid_masks=True)] if freq_mask else []),
        *([TimeMasking(time_mask, iid_masks=True)] if time_mask else []),
    )
    # torchaudio masks (..., freq, time) and draws a mask per clip only for 4-D input.
    return lambda x: masks(x.transpose(1, 2).unsqueeze(1)).squeeze(1).transpose(1, 2)
