"""Waveform augmentation for the demo's training (``WaveAugment``): each perturbation does what it
says, draws are repeatable and independent of chunking, and bad settings are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor

from prunekit.data import audio
from prunekit.data.augment import WaveAugment, augment_wave, augmented_features
from prunekit.demo.train import DemoTrainConfig
from prunekit.errors import ConfigurationError

SR = 16_000
# every perturbation off: what is left is the peak normalisation to 0.5
NONE = WaveAugment(speed=(1, 1), eq=0, band_limit=0, reverb=0, noise=0, gain_db=(0, 0), vtlp=(1, 1))


def _tone(freq: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(SR * seconds)) / SR
    return 0.3 * torch.sin(2 * torch.pi * freq * t)


def _peak_hz(wave: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wave * torch.hann_window(wave.numel())).abs()
    return float(torch.fft.rfftfreq(wave.numel(), 1 / SR)[spectrum.argmax()])


def test_no_perturbation_only_normalises_the_peak():
    wave = _tone(440)
    out, warp = augment_wave(wave, SR, NONE, np.random.default_rng(0), [])
    assert warp == 1.0 and out.shape == wave.shape
    torch.testing.assert_close(out, wave / wave.abs().max() * 0.5)


def test_speed_moves_the_pitch_by_the_factor_and_keeps_the_length():
    fast = dataclasses.replace(NONE, speed=(1.1, 1.1))
    out, _ = augment_wave(_tone(1000), SR, fast, np.random.default_rng(0), [])
    assert out.numel() == SR
    assert _peak_hz(out) == pytest.approx(1100, abs=5)


def test_telephone_band_removes_what_lies_outside_it():
    phone = dataclasses.replace(NONE, band_limit=1.0)
    wave = _tone(100) + _tone(1000) + _tone(6000)
    # draws: speed, equaliser, band-limit, then telephone (< 0.5) or low-pass: take a telephone seed
    seed = next(s for s in range(100) if np.random.default_rng(s).random(4)[3] < 0.5)
    out, _ = augment_wave(wave, SR, phone, np.random.default_rng(seed), [])
    spectrum = torch.fft.rfft(out).abs()
    freqs = torch.fft.rfftfreq(out.numel(), 1 / SR)
    at = {f: float(spectrum[(freqs - f).abs().argmin()]) for f in (100, 1000, 6000)}
    assert at[1000] > 5 * at[100] and at[1000] > 5 * at[6000]  # at least 14 dB down


def test_reverberation_adds_a_decaying_tail_after_a_burst():
    room = dataclasses.replace(NONE, reverb=1.0, rt60=(0.5, 0.5), drr_db=(0.0, 0.0))
    burst = torch.zeros(SR)
    burst[4000:4400] = torch.randn(400, generator=torch.Generator().manual_seed(0))
    out, _ = augment_wave(burst, SR, room, np.random.default_rng(0), [])
    dry, _ = augment_wave(burst, SR, NONE, np.random.default_rng(0), [])
    after = slice(4400 + 800, 4400 + 2400)  # 50-150 ms after the burst ends
    assert float(dry[after].abs().max()) == 0.0
    assert float(out[after].pow(2).mean()) > 1e-4 * float(out[4000:4400].pow(2).mean())


def test_noise_is_mixed_at_the_drawn_snr():
    noisy = dataclasses.replace(NONE, noise=1.0, snr_db=(10.0, 10.0))
    wave = _tone(440)
    noise = torch.randn(3 * SR, generator=torch.Generator().manual_seed(1))
    out, _ = augment_wave(wave, SR, noisy, np.random.default_rng(0), [noise])
    share = torch.dot(out, wave) / torch.dot(wave, wave)  # the tone's part of the output
    residual = out - share * wave
    assert 10 * torch.log10((share * wave).pow(2).mean() / residual.pow(2).mean()) == pytest.approx(
        10, abs=0.5
    )


def test_draws_repeat_by_seed_and_chunking_does_not_change_them():
    extractor = ASTFeatureExtractor(num_mel_bins=32, max_length=100, do_normalize=False)
    gen = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(SR, generator=gen) + _tone(300 + 100 * i) for i in range(5)]
    whole = augmented_features(waves, extractor, WaveAugment(), 7, [])
    parts = torch.cat(
        [
            augmented_features(waves[:2], extractor, WaveAugment(), 7, []),
            augmented_features(waves[2:], extractor, WaveAugment(), 7, [], first=2),
        ]
    )
    torch.testing.assert_close(whole, parts)
    assert not torch.allclose(whole, augmented_features(waves, extractor, WaveAugment(), 8, []))


def test_unperturbed_features_are_the_extractors():
    extractor = ASTFeatureExtractor(num_mel_bins=64, max_length=100, do_normalize=False)
    waves = [_tone(500), 0.2 * torch.randn(SR, generator=torch.Generator().manual_seed(2))]
    ours = augmented_features(waves, extractor, NONE, 0, [])
    theirs = audio.features([(0.5 * w / w.abs().max()).numpy() for w in waves], extractor)
    torch.testing.assert_close(ours, theirs)


def test_vtlp_warps_the_mel_axis():
    extractor = ASTFeatureExtractor(num_mel_bins=64, max_length=100, do_normalize=False)
    up = dataclasses.replace(NONE, vtlp=(1.15, 1.15))
    plain = augmented_features([_tone(1000)], extractor, NONE, 0, [])[0].mean(0)
    warped = augmented_features([_tone(1000)], extractor, up, 0, [])[0].mean(0)
    assert int(warped.argmax()) != int(plain.argmax())


@pytest.mark.parametrize(
    "bad",
    [{"speed": (1.2, 0.9)}, {"reverb": 1.5}, {"vtlp": (0.3, 1.0)}, {"snr_db": (30.0, 0.0)}, {"eq_db": -1.0}],
)
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(ConfigurationError, match=next(iter(bad))):
        WaveAugment(**bad)


def test_augmentation_is_opt_in_and_bad_counts_are_refused():
    assert DemoTrainConfig().views == 0 and DemoTrainConfig(task="tagging").views == 0
    assert DemoTrainConfig(views=4).clean_epochs == 0 and DemoTrainConfig(views=4).augment == WaveAugment()
    with pytest.raises(ConfigurationError, match="views"):
        DemoTrainConfig(views=-1)
    with pytest.raises(ConfigurationError, match="clean_epochs"):
        DemoTrainConfig(clean_epochs=-2)


def test_demo_train_refuses_a_bad_copy_count_before_any_work(tmp_path, run_main):
    out = run_main("demo-train", "--views", "-1", "--out", tmp_path / "demo", cache=tmp_path / "c")
    assert out.returncode == 2 and "views" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "demo").exists() and not (tmp_path / "c").exists()  # nothing generated
