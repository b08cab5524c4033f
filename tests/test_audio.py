"""Audio reading on real files of many formats, rates and channel counts, and on bad input."""

import io

import numpy as np
import pytest
import soundfile as sf
from transformers import ASTFeatureExtractor

from prunekit.data import audio
from prunekit.errors import AudioError


def sine(freq, sr, seconds=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def peak_hz(wave, sr):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()]


@pytest.mark.parametrize(
    "suffix,subtype", [(".wav", "PCM_16"), (".wav", "PCM_24"), (".wav", "FLOAT"), (".flac", "PCM_16"), (".ogg", "VORBIS")]
)
@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 12345])
def test_formats_and_rates(tmp_path, suffix, subtype, sr):
    path = tmp_path / f"tone{suffix}"
    sf.write(path, sine(440, sr), sr, subtype=subtype)
    wave = audio.load_waveform(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 8000) <= 2  # 0.5 s at 16 kHz
    assert abs(peak_hz(wave, 16000) - 440) < 5
    assert 0.3 < np.abs(wave).max() <= 1.0  # PCM scaled to [-1, 1]


@pytest.mark.parametrize("channels", [2, 4])
def test_channels_mix_to_mono(tmp_path, channels):
    data = sine(440, 16000, channels=channels)
    data[:, 1] *= -1  # the second channel cancels the first
    sf.write(tmp_path / "multi.wav", data, 16000, subtype="FLOAT")
    wave = audio.load_waveform(tmp_path / "multi.wav")
    expected = data.mean(axis=1)
    np.testing.assert_allclose(wave, expected, atol=1e-6)
    if channels == 2:
        assert np.abs(wave).max() < 1e-6


def test_bytes_and_file_objects(tmp_path):
    buffer = io.BytesIO()
    sf.write(buffer, sine(300, 16000), 16000, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    from_bytes = audio.load_waveform(data, name="upload.wav")
    from_file = audio.load_waveform(io.BytesIO(data))
    np.testing.assert_array_equal(from_bytes, from_file)
    with pytest.raises(AudioError, match="upload.txt"):
        audio.load_waveform(b"hello, not audio", name="upload.txt")


def test_silence_is_valid(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    wave = audio.load_waveform(tmp_path / "silence.wav")
    assert len(wave) == 16000 and not wave.any()


def write_bad(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "text":
        path.write_text("this is a text file\n" * 20)
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero-frames":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif kind in ("nan", "inf"):
        data = sine(440, 16000)
        data[100] = np.nan if kind == "nan" else np.inf
        sf.write(path, data, 16000, subtype="FLOAT")
    elif kind == "truncated":
        sf.write(path, sine(440, 16000), 16000)
        path.write_bytes(path.read_bytes()[:30])
    return path


@pytest.mark.parametrize(
    "kind,message",
    [("text", "not audio"), ("random", "not audio"), ("empty", "empty"), ("zero-frames", "zero length"),
     ("nan", "NaN"), ("inf", "infinite"), ("truncated", "not audio")],
)
def test_bad_input_names_the_file_and_problem(tmp_path, kind, message):
    path = write_bad(tmp_path, kind)
    with pytest.raises(AudioError, match=message) as info:
        audio.load_waveform(path)
    assert path.name in str(info.value)


def test_missing_and_huge_files(tmp_path, monkeypatch):
    with pytest.raises(AudioError, match="no such file"):
        audio.load_waveform(tmp_path / "missing.wav")
    sf.write(tmp_path / "ok.wav", sine(440, 16000), 16000)
    monkeypatch.setattr(audio, "MAX_FILE_BYTES", 1000)
    with pytest.raises(AudioError, match="limit"):
        audio.load_waveform(tmp_path / "ok.wav")


def test_fit_length_and_windows():
    wave = np.arange(10, dtype=np.float32)
    assert audio.fit_length(wave, 4).tolist() == [0, 1, 2, 3]
    assert audio.fit_length(wave, 12).tolist() == list(range(10)) + [0, 0]
    assert list(audio.window_starts(10, 4, 3)) == [0, 3, 6]
    assert list(audio.window_starts(10, 4, 4)) == [0, 4, 8]  # the last window runs past the end
    assert list(audio.window_starts(2, 4, 2)) == [0]  # shorter than one window: one window


def test_features_use_torchaudio_fbank():
    from transformers.models.audio_spectrogram_transformer import (
        feature_extraction_audio_spectrogram_transformer as fe,
    )

    assert fe.is_speech_available()  # transformers computes AST's fbank with torchaudio's Kaldi code
    extractor = ASTFeatureExtractor(num_mel_bins=16, max_length=50)
    feats = audio.features([sine(440, 16000), np.zeros(4000, np.float32)], extractor)
    assert tuple(feats.shape) == (2, 50, 16)
    assert feats.isfinite().all()
    assert not (feats[0] == feats[1]).all()


def test_features_equal_torchaudio_kaldi_fbank():
    """The extractor really computes torchaudio's Kaldi fbank (what AST was trained on)."""
    import torch
    import torchaudio.compliance.kaldi as kaldi

    wave = sine(440, 16000, seconds=0.3) + 0.05 * np.random.default_rng(0).standard_normal(4800).astype(np.float32)
    expected = kaldi.fbank(
        torch.from_numpy(wave).unsqueeze(0), sample_frequency=16000, window_type="hanning", num_mel_bins=16
    )  # (frames, mels)
    extractor = ASTFeatureExtractor(num_mel_bins=16, max_length=expected.shape[0], do_normalize=False)
    torch.testing.assert_close(audio.features([wave], extractor)[0], expected)


def test_a_truncated_wav_is_refused_but_a_long_one_read_in_part_is_not(tmp_path):
    """libsndfile shrinks the frame count to what a cut-off WAV holds; prunekit says so instead."""
    buffer = io.BytesIO()
    sf.write(buffer, np.full(48_000, 0.1, np.float32), 16_000, format="WAV", subtype="PCM_16")
    whole = buffer.getvalue()
    assert audio.read_audio(whole, max_seconds=1.0)[0].shape == (16_000, 1)  # the cut is not truncation
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(AudioError, match=r"cut.wav is cut short: its header says 48,000 frames, the file holds 15,985"):
        audio.read_audio(cut)
