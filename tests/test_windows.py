"""Classifying one waveform of any length, and its spectrogram for display."""

import numpy as np
import pytest
import torch

from prunekit.data import audio
from prunekit.evaluation.metrics import predict_logits
from prunekit.evaluation.windows import classify, log_mel, window_samples
from prunekit.models import load_model


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir)


def _tone(seconds, freq=440.0):
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_a_short_clip_is_one_window_and_matches_the_model(tiny):
    model, extractor, labels = tiny
    wave = _tone(0.1)
    result = classify(model, extractor, labels, wave)
    assert len(result.windows) == 1
    expected = predict_logits(model, audio.features([wave], extractor)).softmax(-1)[0].numpy()
    assert np.allclose(result.probabilities, expected, atol=1e-6)
    top = result.top(2)
    assert list(top.columns) == ["label", "probability"] and len(top) == 2
    assert top["probability"].iloc[0] == pytest.approx(expected.max())


def test_a_long_clip_is_read_in_half_overlapping_windows_and_max_pooled(tiny):
    model, extractor, labels = tiny
    window = window_samples(extractor)
    assert window == extractor.max_length * 160
    wave = np.concatenate([_tone(0.5, 300), _tone(1.0, 2000)])
    result = classify(model, extractor, labels, wave)
    expected_windows = len(audio.window_starts(len(wave), window, window // 2))
    assert len(result.windows) == expected_windows > 2
    assert np.allclose(result.windows["start_s"].diff().dropna(), window // 2 / 16000)
    chunks = [wave[s : s + window] for s in audio.window_starts(len(wave), window, window // 2)]
    per_window = predict_logits(model, audio.features(chunks, extractor)).softmax(-1).numpy()
    assert np.allclose(result.probabilities, per_window.max(0), atol=1e-6)


def test_silence_is_classified_and_empty_input_is_refused(tiny):
    model, extractor, labels = tiny
    assert classify(model, extractor, labels, np.zeros(4000, np.float32)).probabilities.shape == (
        len(labels),
    )
    with pytest.raises(ValueError, match="non-empty mono"):
        classify(model, extractor, labels, np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="non-empty mono"):
        classify(model, extractor, labels, np.zeros((2, 100), np.float32))


def test_log_mel_covers_the_whole_clip(tiny):
    _, extractor, _ = tiny
    spec = log_mel(_tone(2.0), extractor)
    assert spec.shape[1] == extractor.num_mel_bins
    assert 195 <= spec.shape[0] <= 200  # 10 ms frames of 25 ms windows over 2 s
    assert np.isfinite(spec).all()
    # The first frames match the model's own features before normalisation.
    feats = audio.features([_tone(2.0)], extractor)[0]  # (max_length, mels), normalised
    n = extractor.max_length
    raw = (feats * (2 * extractor.std) + extractor.mean) if extractor.do_normalize else feats
    assert torch.allclose(raw, torch.from_numpy(spec[:n]), atol=1e-3)


def test_spectrogram_draws_digital_silence_black(tiny):
    from prunekit.report.figures import spectrogram

    _, extractor, _ = tiny
    wave = np.concatenate([np.zeros(8000, np.float32), _tone(0.5, 1000)])  # silence, then a tone
    mel = log_mel(wave, extractor)
    heat = spectrogram(mel).data[0]
    assert heat.zmax == pytest.approx(mel.max()) and heat.zmin == pytest.approx(mel.max() - 13.8)
    assert mel[:40].max() < heat.zmin  # the silent half sits below the scale: the darkest colour
    # which is black: plotly.js in the app drew Magma's "#000004" in a theme colour (pink).
    colours = [colour for _, colour in heat.colorscale]
    assert colours[0] == "#000000" and "#000004" not in colours and colours[-1] == "#fcfdbf"
