"""Training augmentation: SpecAugment on spectrogram batches (the one implementation demo training
and LoRA recovery share) and waveform perturbations for the demo's synthetic speech."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["WaveAugment", "augment_wave", "augmented_features", "spec_augment"]


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


@dataclass(frozen=True)
class WaveAugment:
    """Waveform perturbations for training on synthetic speech, so a model hears more than one
    synthesiser's voice: each is drawn per clip, and ``augment_wave`` applies them in this order.

    * speed: resampling by a factor (tempo and pitch together, as in Ko et al. 2015);
    * random equaliser: up to three peaking bands of +-``eq_db`` (a microphone's or a voice's
      colour, which formant synthesis lacks);
    * band-limiting: a telephone band (300-3,400 Hz) or a low-pass at 2.5-7 kHz;
    * room reverberation: a synthetic impulse response, a direct path and a tail of exponentially
      decaying noise (RT60 and the direct-to-reverberant ratio drawn);
    * background noise at a wide SNR (the set's own noise files, white, pink, brown, hum);
    * gain;
    * vocal-tract-length perturbation (Jaitly & Hinton 2013): a warp of the mel filters' frequency
      axis, applied by Kaldi's fbank (``vtln_warp``) when the features are made.

    Probabilities are per clip; ranges are (low, high) drawn uniformly."""

    speed: tuple[float, float] = (0.85, 1.15)
    eq: float = 0.8
    eq_db: float = 10.0
    band_limit: float = 0.3
    reverb: float = 0.5
    rt60: tuple[float, float] = (0.1, 0.6)
    drr_db: tuple[float, float] = (0.0, 15.0)  # direct-to-reverberant energy ratio
    noise: float = 0.5
    snr_db: tuple[float, float] = (0.0, 30.0)
    gain_db: tuple[float, float] = (-10.0, 0.0)
    vtlp: tuple[float, float] = (0.85, 1.15)

    def __post_init__(self) -> None:
        from prunekit.errors import check_settings

        ranges = ("speed", "rt60", "drr_db", "snr_db", "gain_db", "vtlp")
        check_settings(
            (
                *((name, getattr(self, name), _is_range(getattr(self, name))) for name in ranges),
                *((name, getattr(self, name), 0 <= getattr(self, name) <= 1) for name in _PROBABILITIES),
                ("speed", self.speed, self.speed[0] > 0),
                ("rt60", self.rt60, self.rt60[0] > 0),
                ("vtlp", self.vtlp, self.vtlp[0] >= 0.5 and self.vtlp[1] <= 2),
                ("eq_db", self.eq_db, self.eq_db >= 0),
            ),
            "waveform augmentation",
            "ranges are (low, high) with low <= high; probabilities in [0, 1]; speed and rt60 > 0; "
            "vtlp within [0.5, 2]",
        )


_PROBABILITIES = ("eq", "band_limit", "reverb", "noise")


def _is_range(value) -> bool:
    return len(value) == 2 and value[0] <= value[1]


def augment_wave(
    wave: torch.Tensor, sr: int, aug: WaveAugment, rng: np.random.Generator, noises: list[torch.Tensor]
) -> tuple[torch.Tensor, float]:
    """One draw of ``aug`` applied to a mono clip (T,) at ``sr``; returns the clip, same length,
    and the VTLP warp factor for its features. ``noises`` are background waveforms at ``sr``
    (an empty list: synthetic white noise)."""
    import torchaudio.functional as F

    n = wave.numel()
    out = wave.float().unsqueeze(0)
    factor = float(rng.uniform(*aug.speed))
    target = round(sr / factor / 100) * 100  # a multiple of 100 Hz keeps torchaudio's kernel small
    if target != sr:  # speed: resample to sr / factor, read as sr
        out = F.resample(out, sr, target)
    if rng.random() < aug.eq:
        for _ in range(int(rng.integers(1, 4))):
            centre = float(np.exp(rng.uniform(np.log(150), np.log(0.45 * sr))))
            out = F.equalizer_biquad(out, sr, centre, float(rng.uniform(-aug.eq_db, aug.eq_db)), Q=0.9)
    if rng.random() < aug.band_limit:
        if rng.random() < 0.5:
            out = F.lowpass_biquad(F.highpass_biquad(out, sr, 300.0), sr, 3400.0)
        else:
            out = F.lowpass_biquad(out, sr, float(rng.uniform(2500, min(7000, 0.45 * sr))))
    if rng.random() < aug.reverb:
        rt60 = float(rng.uniform(*aug.rt60))
        t = torch.arange(1, int(rt60 * sr)) / sr
        tail = torch.from_numpy(rng.standard_normal(t.numel())).float() * torch.exp(-6.9078 * t / rt60)
        # the direct path (1) above the tail's energy by the drawn direct-to-reverberant ratio
        tail = tail * (10 ** (-float(rng.uniform(*aug.drr_db)) / 20) / tail.norm().clamp_min(1e-10))
        ir = torch.cat([torch.ones(1), tail])
        out = F.fftconvolve(out, ir.unsqueeze(0))[:, : out.shape[1]]
    out = _window(out[0], n)  # back to the clip's length, around where the energy is
    if rng.random() < aug.noise:
        noise = _noise_segment(noises, n, rng)
        snr = float(rng.uniform(*aug.snr_db))
        power = out.pow(2).mean().clamp_min(1e-10)
        out = out + noise * torch.sqrt(power / noise.pow(2).mean().clamp_min(1e-10) / 10 ** (snr / 10))
    peak = out.abs().max().clamp_min(1e-6)
    out = out / peak * 0.5 * 10 ** (float(rng.uniform(*aug.gain_db)) / 20)
    return out, float(rng.uniform(*aug.vtlp))


def _window(wave: torch.Tensor, n: int) -> torch.Tensor:
    """``wave`` cut or zero-padded to ``n`` samples, keeping the ``n``-sample stretch of most energy."""
    if wave.numel() <= n:
        pad = n - wave.numel()
        return torch.nn.functional.pad(wave, (pad // 2, pad - pad // 2))
    energy = torch.cumsum(torch.nn.functional.pad(wave.pow(2), (1, 0)), 0)
    start = int(torch.argmax(energy[n:] - energy[:-n]))
    return wave[start : start + n]


def _noise_segment(noises: list[torch.Tensor], n: int, rng: np.random.Generator) -> torch.Tensor:
    if not noises:
        return torch.from_numpy(rng.standard_normal(n)).float()
    source = noises[int(rng.integers(len(noises)))]
    if source.numel() <= n:
        return source.repeat(n // max(1, source.numel()) + 1)[:n]
    start = int(rng.integers(source.numel() - n))
    return source[start : start + n]


def augmented_features(
    waves: list[torch.Tensor],
    extractor,
    aug: WaveAugment,
    seed: int,
    noises: list[torch.Tensor],
    progress=None,
    first: int = 0,
) -> torch.Tensor:
    """Features (N, frames, mels) of one augmented draw of each clip, made as ``extractor`` makes
    them (Kaldi fbank, padded or cut to its ``max_length``, not normalised) but with each clip's
    VTLP warp; the draw of clip ``i`` (numbered from ``first``) depends only on ``seed`` and ``i``,
    so a split into chunks gives the same features."""
    import torchaudio.compliance.kaldi as kaldi

    sr, frames = extractor.sampling_rate, extractor.max_length
    out = torch.zeros(len(waves), frames, extractor.num_mel_bins)
    for i, wave in enumerate(waves):
        rng = np.random.default_rng([seed, first + i])
        clip, warp = augment_wave(wave, sr, aug, rng, noises)
        fbank = kaldi.fbank(
            clip.unsqueeze(0),
            sample_frequency=sr,
            window_type="hanning",
            num_mel_bins=extractor.num_mel_bins,
            vtln_warp=warp,
        )[:frames]
        out[i, : fbank.shape[0]] = fbank
        if progress and (i + 1) % 256 == 0:
            progress(i + 1, len(waves))
    return out
