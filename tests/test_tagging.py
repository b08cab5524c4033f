"""The synthetic tagging set (``demo-tagging``): every clip has one to three different words and
one background, each a label; splits are by voice, the speech set's; it reads as a multi-label
manifest; same seed, same bytes."""

import csv
import hashlib

import numpy as np
import pytest
import soundfile as sf

from prunekit.data import synth, tagging
from prunekit.data.manifest import read_manifest

TINY = tagging.TaggingConfig(
    accents=("en", "en-us"), variants=("m1", "f1", "m2", "f2", "m3"), clips_per_voice=2
)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return tagging.generate(tmp_path_factory.mktemp("tagging") / "set", TINY)


def _rows(root):
    with open(root / tagging.MANIFEST, newline="") as f:
        return list(csv.DictReader(f))


def test_every_clip_has_one_to_three_words_and_one_background(tiny_set):
    rows = _rows(tiny_set)
    assert len(rows) == 10 * 2
    planned = {c.path: c for c in tagging._plan(TINY)}
    for row in rows:
        labels = row["labels"].split(",")
        words = [t for t in labels if t in TINY.words]
        backgrounds = [t for t in labels if t in tagging.BACKGROUNDS]
        assert 1 <= len(words) <= 3 and len(set(words)) == len(words) and len(backgrounds) == 1
        assert len(words) + 1 == len(labels)
        assert tuple(labels) == planned[row["file"]].labels
        wave, sr = sf.read(tiny_set / row["file"])
        assert sr == 16000 and len(wave) == 32000 and np.abs(wave).max() > 0.01


def test_splits_are_the_speech_sets_voice_split(tiny_set):
    voices = synth.split_voices(TINY.speech())
    speaker_split = {synth.speaker_id(v): s for s, vs in voices.items() for v in vs}
    for row in _rows(tiny_set):
        assert row["split"] == speaker_split[row["file"].split("/")[1].split("_")[0]]
    assert {r["split"] for r in _rows(tiny_set)} == {"train", "validation", "test"}


def test_it_reads_as_a_multilabel_manifest(tiny_set):
    data = read_manifest(
        tiny_set / tagging.MANIFEST,
        file_column="file",
        label_columns="labels",
        label_separator=",",
        split_column="split",
    )
    assert data.multilabel and len(data.clips) == 20
    assert set(data.labels) <= set(tagging.tags(TINY))
    assert tagging.tags(TINY) == tuple(sorted((*tagging.TAG_WORDS, *tagging.BACKGROUNDS)))
    first = _rows(tiny_set)[0]
    clip = next(c for c in data.clips if c.path.name == first["file"].split("/")[1])
    assert clip.labels == tuple(first["labels"].split(","))


def test_bad_settings_are_refused():
    from prunekit.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="max_words must be between 1 and the 10 words, got 11"):
        tagging.TaggingConfig(max_words=11).validate()
    with pytest.raises(
        ConfigurationError, match=r"clip_seconds 1\.0 leaves under 0\.5 s per word for 3 words"
    ):
        tagging.TaggingConfig(clip_seconds=1.0).validate()


@pytest.mark.slow  # a second generation (espeak-ng in its own process)
def test_same_seed_same_bytes(tiny_set, tmp_path):
    again = tagging.generate(tmp_path / "again", TINY)

    def digest(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digest(again) == digest(tiny_set)


@pytest.mark.slow  # generates the whole tagging set into cache/ on a fresh clone (4,608 clips)
def test_demo_tagging_is_a_dataset_spec_for_the_cli_and_the_app(real_cache, tmp_path, run_main):
    import re

    from conftest import REPO, _tiny_config
    from streamlit.testing.v1 import AppTest
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    from prunekit.data.datasets import open_dataset
    from prunekit.evaluation.metrics import evaluate
    from prunekit.models import load_model

    names = tagging.tags()
    config = _tiny_config(
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        problem_type="multi_label_classification",
        max_length=200,  # the set's 2 s clips
    )
    folder = tmp_path / "tagger"
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=16, max_length=200).save_pretrained(folder)
    data = open_dataset("demo-tagging")
    assert data.multilabel and data.labels == names and len(data.clips) == 192 * 24
    out = run_main("evaluate", "--model", folder, "--data", "demo-tagging", "--repeats", "1")
    assert out.returncode == 0, out.stderr
    expected = evaluate(*load_model(folder), data, "test").mean_average_precision
    assert float(re.search(r"mAP (\S+)", out.stdout).group(1)) == pytest.approx(expected, abs=5e-5)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.session_state["model_kind"] = "Local folder"
    at.session_state["model_ref"] = str(folder)
    at.session_state["data_kind"] = "Synthetic tagging set"
    at.run()
    assert "Synthetic tagging set" in at.radio(key="data_kind").options
    at.switch_page("pages/overview.py").run()
    assert not at.exception and not at.error
    shown = {m.label: m.value for m in at.metric}
    assert shown["mAP on the test split of synthetic tagging (seed 0)"] == f"{expected:.3f}"
