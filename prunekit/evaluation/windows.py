"""Classify one waveform of any length, and draw its log-mel spectrogram.

A clip longer than the model's window is cut into windows half a window apart; a class's
probability for the clip is its highest over the windows, so a word said anywhere in a long
recording is found (averaging would dilute it with the silence around).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from prunekit.data import audio
from prunekit.errors import AudioError
from prunekit.evaluation.metrics import predict_logits
from prunekit.models import anatomy
from prunekit.progress import Progress

__all__ = [
    "HOP_MS",
    "MAX_SECONDS",
    "Classification",
    "Recording",
    "classify",
    "log_mel",
    "read_recording",
    "window_samples",
]

HOP_MS = 10  # the AST feature extractor's frame shift
MAX_SECONDS = 300  # longer recordings are classified on their first five minutes (the app says so)


@dataclass(frozen=True)
class Recording:
    """An uploaded or recorded clip, ready to classify: 16 kHz mono ``wave`` (at most
    ``MAX_SECONDS``) and the full length of the file, so a caller can say what was cut."""

    wave: np.ndarray
    seconds: float

    @property
    def cut(self) -> bool:
        return self.seconds > MAX_SECONDS


def read_recording(source: audio.AudioSource, *, name: str | None = None) -> Recording:
    """Read a user's file for classification: only its first ``MAX_SECONDS`` are decoded and
    resampled, whatever its length or header (AudioError for anything unreadable)."""
    data = source if isinstance(source, bytes) else source.read() if hasattr(source, "read") else source
    seconds = audio.duration_seconds(data, name=name)
    return Recording(audio.load_waveform(data, name=name, max_seconds=MAX_SECONDS), seconds)


def window_samples(extractor) -> int:
    """Samples of audio one model input covers (``max_length`` frames of 10 ms)."""
    return int(extractor.max_length * extractor.sampling_rate * HOP_MS // 1000)


@dataclass(frozen=True)
class Classification:
    """``probabilities``: (classes,) for the whole clip (softmax, or one sigmoid per class when
    ``multilabel``: they need not sum to 1); ``windows``: start_s, top label and its probability
    for each window."""

    probabilities: np.ndarray
    labels: tuple[str, ...]
    windows: pd.DataFrame
    multilabel: bool = False

    def top(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` most probable labels: columns label, probability."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return pd.DataFrame(
            {"label": [self.labels[i] for i in order], "probability": self.probabilities[order]}
        )


def classify(
    model: torch.nn.Module,
    extractor,
    labels: Sequence[str],
    wave: np.ndarray,
    *,
    progress: Progress | None = None,
    multilabel: bool | None = None,
) -> Classification:
    """Classify a 16 kHz mono waveform with sliding windows (see the module docstring).
    ``multilabel``: sigmoid per class instead of softmax; by default what the model's config
    says (``anatomy.is_multilabel``)."""
    if multilabel is None:
        multilabel = anatomy.is_multilabel(model)
    if wave.ndim != 1 or len(wave) == 0:
        raise AudioError(f"classify needs a non-empty mono waveform, got shape {wave.shape}")
    window = window_samples(extractor)
    hop = max(window // 2, 1)
    # Unpadded chunks: the feature extractor pads the last (short) one exactly as it pads a short
    # clip in evaluation, so a clip within one window gets the same answer as in ``evaluate``.
    starts = audio.window_starts(len(wave), window, hop)
    chunks = [wave[s : s + window] for s in starts]
    feats = audio.features(chunks, extractor)
    logits = predict_logits(model, feats, progress=progress)  # (W, C)
    probs = (logits.sigmoid() if multilabel else logits.softmax(-1)).numpy()
    best = probs.argmax(1)
    windows = pd.DataFrame(
        {
            "start_s": np.asarray(starts) / extractor.sampling_rate,
            "label": [labels[i] for i in best],
            "probability": probs[np.arange(len(best)), best],
        }
    )
    return Classification(probs.max(0), tuple(labels), windows, multilabel)


def log_mel(wave: np.ndarray, extractor) -> np.ndarray:
    """Log-mel filterbank (frames, mels) of the whole waveform, as the model's extractor computes
    it (Kaldi fbank, Hanning window) but neither padded, trimmed nor normalised: for display."""
    import torchaudio.compliance.kaldi as kaldi

    x = torch.from_numpy(np.ascontiguousarray(audio.fit_length(wave, max(len(wave), 400)), np.float32))
    return kaldi.fbank(
        x.unsqueeze(0),
        sample_frequency=extractor.sampling_rate,
        window_type="hanning",
        num_mel_bins=extractor.num_mel_bins,
        htk_compat=True,
        use_energy=False,
        dither=0.0,
        frame_shift=HOP_MS,
    ).numpy()
