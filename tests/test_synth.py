"""The synthetic Speech Commands generator: determinism, voice-disjoint splits, layout, atomic writes."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from prunekit.data import synth

# 2 accents x 2 variants = 4 voices (one validation, one test); f2 has breath noise (libc rand()).
TINY = synth.SynthConfig(
    words=("go", "up", "yes"),
    accents=("en", "en-us"),
    variants=("m1", "f2"),
    val_fraction=0.25,
    test_fraction=0.25,
    takes=1,
)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _clip_paths(root: Path) -> list[str]:
    return [
        p.relative_to(root).as_posix()
        for p in sorted(root.glob("*/*.wav"))
        if p.parent.name != "_background_noise_"
    ]


def _list(root: Path, name: str) -> list[str]:
    return (root / name).read_text().splitlines()


def _speaker(path: str) -> str:
    return path.split("/")[1].split("_nohash_")[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("synth") / "sc", TINY)


def test_default_config_size_and_words():
    config = synth.SynthConfig()
    config.validate()
    assert tuple(sorted(synth.WORDS)) == synth.WORDS and len(set(synth.WORDS)) == 35
    assert 10000 <= len(config.voices) * len(config.words) * config.takes <= 16000
    splits = synth.split_voices(config)
    assert min(len(v) for v in splits.values()) >= 10  # enough held-out voices to mean something


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    again = _files(synth.generate(tmp_path / "again", TINY))
    assert again == _files(tiny)
    assert len(_clip_paths(tiny)) == 4 * 3
    other = synth.generate(tmp_path / "other", replace(TINY, seed=1))
    clips = _clip_paths(tiny)
    assert _clip_paths(other) == clips  # same speakers and words, so the same names...
    assert all((tiny / c).read_bytes() != (other / c).read_bytes() for c in clips)  # ...other audio
    assert (tiny / "_background_noise_" / "pink_noise.wav").read_bytes() != (
        other / "_background_noise_" / "pink_noise.wav"
    ).read_bytes()


def test_splits_are_voice_disjoint(tiny):
    validation, test = _list(tiny, "validation_list.txt"), _list(tiny, "testing_list.txt")
    train = sorted(set(_clip_paths(tiny)) - set(validation) - set(test))
    by_split = {
        name: {_speaker(p) for p in paths}
        for name, paths in (("train", train), ("validation", validation), ("test", test))
    }
    assert [len(by_split[s]) for s in ("train", "validation", "test")] == [2, 1, 1]
    assert not (
        by_split["train"] & by_split["validation"]
        or by_split["train"] & by_split["test"]
        or by_split["validation"] & by_split["test"]
    )
    summary = json.loads((tiny / "synthetic.json").read_text())
    for split, voices in summary["voices"].items():
        assert {synth.speaker_id(v) for v in voices} == by_split[split]
    assert summary["clips"] == {"train": 6, "validation": 3, "test": 3, "total": 12}


def test_layout_and_audio(tiny):
    clips = _clip_paths(tiny)
    assert sorted({c.split("/")[0] for c in clips}) == ["go", "up", "yes"]
    for path in clips:
        info = sf.info(tiny / path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
        assert path.split("/")[1].endswith("_nohash_0.wav") and len(path.split("/")[1].split("_")[0]) == 8
        wave, _ = sf.read(tiny / path, dtype="float32")
        assert np.isfinite(wave).all() and np.sqrt(np.mean(wave**2)) > 1e-3 and np.abs(wave).max() < 1
    for name in ("validation_list.txt", "testing_list.txt"):
        lines = _list(tiny, name)
        assert lines and lines == sorted(lines) and all((tiny / line).is_file() for line in lines)
    noise = sorted(p.name for p in (tiny / "_background_noise_").glob("*.wav"))
    assert noise == sorted(synth.NOISE_FILES)
    for name in noise:
        wave, sr = sf.read(tiny / "_background_noise_" / name, dtype="float32")
        assert sr == 16000 and wave.size >= 10 * sr and np.std(wave) > 0.01
    summary = json.loads((tiny / "synthetic.json").read_text())
    assert summary["format_version"] == synth.FORMAT_VERSION
    assert (
        synth.SynthConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in summary["config"].items()})
        == TINY
    )  # the config round-trips


def test_speech_is_louder_than_the_noise_floor(tiny):
    # the word sits somewhere in the window: the loudest 100 ms is well above the quietest
    for path in _clip_paths(tiny):
        wave, _ = sf.read(tiny / path, dtype="float32")
        rms = np.sqrt((wave.reshape(10, 1600) ** 2).mean(1))
        assert rms.max() > 2 * rms.min(), path


def test_atomic_write_and_progress(tmp_path):
    root = tmp_path / "data" / "sc"
    calls = []
    assert not root.exists()
    synth.generate(root, TINY, progress=lambda done, total: calls.append((done, total)))
    assert (root / "synthetic.json").is_file()
    assert [p.name for p in root.parent.iterdir()] == ["sc"]  # no temporary sibling left
    assert calls[-1] == (12, 12) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    with pytest.raises(FileExistsError, match="sc"):
        synth.generate(root, TINY)


def test_interrupted_run_leaves_nothing(tmp_path):
    def interrupt(done, total):
        raise KeyboardInterrupt

    # 20 words x 4 voices = 80 clips: two batches, so files are being written when it stops
    config = replace(TINY, words=tuple(f"{letter}o" for letter in "bcdfghjklmnprstvwxyz"))
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "sc", config, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"val_fraction": 1.2}, "1.2"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "0.5"),
        ({"takes": 0}, "takes=0"),
        ({"seed": -1}, "seed=-1"),
        ({"accents": ("en-gb",)}, "'en-gb'"),
        ({"variants": ("m1", "nosuch")}, "'nosuch'"),
        ({"words": ("Go",)}, "'Go'"),
        ({"rate_wpm": (300, 200)}, "rate_wpm"),
        ({"accents": ("en", "en-shaw")}, "en-shaw"),
        ({"accents": ("en",), "variants": ("m1", "m2")}, "2 voices"),  # no voice left for training
    ],
)
def test_bad_config_raises_naming_the_value(tmp_path, overrides, named):
    with pytest.raises(ValueError, match=named):
        synth.generate(tmp_path / "sc", replace(TINY, **overrides))
    assert not (tmp_path / "sc").exists()


def test_a_rerun_removes_what_a_killed_generation_left_behind(tmp_path, monkeypatch, write_tone):
    """A SIGKILLed ``demo-data`` leaves its hidden partial folder (no cleanup runs); the next call
    of demo_dataset removes it, keeps one whose writer is alive, and drops old-version locks."""
    import subprocess
    import sys

    from prunekit.data import datasets

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    root = datasets.demo_root(0)
    write_tone(root / "yes" / "0000_nohash_0.wav", 440)  # a finished set (tiny): nothing to generate
    for name in ("validation_list.txt", "testing_list.txt"):
        (root / name).write_text("")
    (root / "synthetic.json").write_text("{}")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead = tmp_path / f".{root.name}.partial-{gone.stdout.strip()}-0123abcd"
    live = tmp_path / f".{root.name}.partial-{os.getpid()}-4567ef01"
    for partial in (dead, live):
        (partial / "yes").mkdir(parents=True)
        (partial / "yes" / "clip.wav").write_bytes(b"RIFF")
    old_lock = tmp_path / "synthetic-speech-commands-v1-seed0.lock"
    old_lock.write_text("")
    assert len(datasets.demo_dataset(0).clips) == 1
    assert not dead.exists() and live.is_dir() and not old_lock.exists()
    assert (tmp_path / f"{root.name}.lock").exists()  # the current lock stays (another process may hold it)


def test_a_lock_the_system_refuses_is_a_dataset_error_that_says_where(tmp_path, monkeypatch):
    """A symlink loop where the synthetic set's lock file goes (what a cache copied with links
    left behind) is reported as a DatasetError naming the cache folder, not a bare OSError."""
    from prunekit.data import datasets
    from prunekit.errors import DatasetError

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    lock = tmp_path / f"{datasets.demo_root(0).name}.lock"
    lock.symlink_to(lock)  # a link to itself: "Too many levels of symbolic links"
    with pytest.raises(DatasetError, match=f"in the cache folder {tmp_path}: .*PRUNEKIT_CACHE"):
        datasets.demo_dataset(0)
    lock = tmp_path / f"{datasets.tagging_root(0).name}.lock"
    lock.symlink_to(lock)
    with pytest.raises(DatasetError, match="synthetic-tagging"):
        datasets.tagging_dataset(0)
