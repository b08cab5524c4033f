from pathlib import Path

import pytest
from conftest import TINY_LABELS

from prunekit.data.datasets import open_dataset, read_class_folders, read_speech_commands
from prunekit.errors import DatasetError


def test_speech_commands_layout(tiny_speech_commands):
    data = read_speech_commands(tiny_speech_commands)
    assert data.layout == "speech-commands"
    assert data.labels == tuple(TINY_LABELS)  # _background_noise_ is not a label
    assert len(data.clips) == 12
    assert {c.path.name[:8] for c in data.split("validation")} == {"00000002"}
    assert {c.path.name[:8] for c in data.split("test")} == {"00000003"}
    assert {c.path.name[:8] for c in data.split("train")} == {"00000000", "00000001"}
    counts = data.counts()
    assert counts.loc["go", "train"] == 2 and counts.loc["go", "test"] == 1


def test_open_dataset_detects_layouts(tiny_speech_commands, tmp_path, write_tone):
    assert open_dataset(tiny_speech_commands).layout == "speech-commands"
    for label in ("a", "b"):
        for i in range(20):
            write_tone(tmp_path / "plain" / label / f"{i}.flac", 200 + i)
    plain = open_dataset(tmp_path / "plain")
    assert plain.layout == "class-folders"
    assert plain.labels == ("a", "b")
    assert len(plain.clips) == 40


def test_class_folder_split_is_deterministic_and_stable(tmp_path, write_tone):
    for i in range(60):
        write_tone(tmp_path / "x" / f"{i}.wav", 200 + i)
    first = read_class_folders(tmp_path, validation=0.2, test=0.2)
    splits = {c.path.name: c.split for c in first.clips}
    assert set(splits.values()) == {"train", "validation", "test"}
    write_tone(tmp_path / "x" / "new.wav", 999)  # adding a file does not move the others
    second = read_class_folders(tmp_path, validation=0.2, test=0.2)
    assert all(splits[c.path.name] == c.split for c in second.clips if c.path.name in splits)


def test_bad_dataset_folders(tmp_path):
    with pytest.raises(DatasetError, match="No dataset folder"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty" / "label").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no class folders"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="Speech Commands layout"):
        read_speech_commands(tmp_path / "empty")
    with pytest.raises(DatasetError, match="fractions"):
        read_class_folders(tmp_path, validation=0.6, test=0.5)


def test_unknown_and_empty_split(tiny_speech_commands, tmp_path, write_tone):
    data = read_speech_commands(tiny_speech_commands)
    with pytest.raises(DatasetError, match="Unknown split"):
        data.split("dev")
    write_tone(tmp_path / "one" / "a" / "0.wav", 200)
    only = read_class_folders(tmp_path / "one", validation=0.0, test=0.0)
    with pytest.raises(DatasetError, match=r"test split .* is empty"):
        only.split("test")
    assert isinstance(only.clips[0].path, Path)


def test_a_sample_cuts_one_split_and_keeps_the_rest(tiny_speech_commands):
    dataset = open_dataset(f"speech-commands:{tiny_speech_commands}")
    sample = dataset.sample("train", 4, seed=1)
    kept = sample.split("train")
    assert len(kept) == 4 and set(kept) <= set(dataset.split("train"))
    order = [c.path for c in dataset.split("train")]
    assert [c.path for c in kept] == sorted((c.path for c in kept), key=order.index)  # the order kept
    assert sample.split("test") == dataset.split("test") and sample.split("validation") == dataset.split(
        "validation"
    )
    assert sample.name.endswith("(4 of its 6 train clips)")
    assert dataset.sample("train", 4, seed=1) == sample  # seeded
    assert dataset.sample("train", 4, seed=2) != sample
    assert dataset.sample("test", 3) is dataset  # no fewer clips than the split holds: itself
    with pytest.raises(DatasetError, match="at least one clip"):
        dataset.sample("test", 0)
    with pytest.raises(DatasetError, match="Unknown split"):
        dataset.sample("dev", 1)
