"""demo-train --task tagging: the multi-label demo's settings, folder and command, and an end-to-end
run at a toy size (the real tagging set, a tiny AST, one epoch)."""

import dataclasses
import json

import pytest
from conftest import REPO

from prunekit.cli import build_parser
from prunekit.data.datasets import tagging_dataset
from prunekit.demo.train import DemoTrainConfig, train_demo
from prunekit.errors import ConfigurationError, ModelLoadError
from prunekit.models import load_model, loading


def test_the_task_sets_the_input_length_and_the_speech_defaults_stay():
    assert DemoTrainConfig(task="tagging").max_length == 200  # 2-s clips
    assert DemoTrainConfig(task="tagging").label_smoothing == 0.0
    speech = dataclasses.asdict(DemoTrainConfig())
    committed = json.loads((loading.DEMO_DIR / "training.json").read_text())["config"]
    # the committed demo's settings still describe the default speech run
    assert {k: v for k, v in speech.items() if k in committed} == {
        k: v for k, v in committed.items() if k in speech
    }
    assert speech["task"] == "speech" and speech["max_length"] == 100


def test_an_unknown_task_is_refused_with_the_allowed_ones():
    with pytest.raises(ConfigurationError, match="speech, tagging"):
        DemoTrainConfig(task="music")


def test_tagging_refuses_label_smoothing():
    with pytest.raises(ConfigurationError, match="label_smoothing"):
        DemoTrainConfig(task="tagging", label_smoothing=0.1)


def test_a_missing_tagging_demo_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "DEMO_TAGGING_DIR", tmp_path / "demo_tagging_model")
    with pytest.raises(ModelLoadError, match="demo-train --task tagging"):
        load_model("demo-tagging")


def test_the_command_takes_a_task():
    args = build_parser().parse_args(["demo-train", "--task", "tagging", "--epochs", "2"])
    assert (args.task, args.epochs, args.out) == ("tagging", 2, None)
    assert build_parser().parse_args(["demo-train"]).task == "speech"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo-train", "--task", "music"])


def test_the_sidebar_offers_the_tagging_demo_once_it_exists(tmp_path, monkeypatch, tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    def sidebar(**state):
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
        for key, value in {"data_kind": "Folder per class", **state}.items():  # no data: nothing evaluated
            at.session_state[key] = value
        at.run()
        assert not at.exception, at.exception
        return at

    monkeypatch.setattr(loading, "DEMO_TAGGING_DIR", tmp_path / "demo_tagging_model")
    assert "Embedded tagging demo" not in sidebar().sidebar.radio(key="model_kind").options
    monkeypatch.setattr(loading, "DEMO_TAGGING_DIR", tiny_model_dir)
    try:
        at = sidebar(model_kind="Embedded tagging demo")
        assert at.sidebar.radio(key="model_kind").value == "Embedded tagging demo"
        assert "model_ref" not in [t.key for t in at.sidebar.text_input]  # no folder to type
        assert not at.error and {m.label: m.value for m in at.metric}["Layers"] == "2"  # the tiny model
    finally:
        from prunekit.ui import _cached_model

        _cached_model.clear()  # the process-wide cache must not keep the tiny model as "demo-tagging"


@pytest.mark.slow
@pytest.mark.timeout(
    1800
)  # featurises the 4,608 tagging clips (2 s) and trains an epoch: minutes on 2 shared cores
def test_train_tagging_demo_writes_a_loadable_tagger(tmp_path, real_cache):
    cfg = DemoTrainConfig(
        task="tagging", hidden_size=32, layers=2, heads=4, intermediate_size=64, epochs=1, batch_size=128
    )
    out = tmp_path / "demo-tagging"
    record = train_demo(cfg, out, quiet=True)
    model, extractor, labels = load_model(out)
    assert len(labels) == 14 and model.config.num_hidden_layers == 2
    assert model.config.problem_type == "multi_label_classification" and extractor.max_length == 200
    saved = json.loads((out / "training.json").read_text())
    assert saved["config"]["task"] == "tagging" and saved["config"]["label_smoothing"] == 0.0
    assert "test_accuracy" not in saved and 0 <= saved["test_mAUC"] <= 1
    assert saved["test_clips"] == record["test_clips"] > 0
    assert set(saved["history"][0]) == {"epoch", "val_mAP", "val_loss"}
    # The recorded mAP is the saved model's on the held-out voices (recomputed here).
    from prunekit.evaluation.metrics import evaluate

    result = evaluate(model, extractor, labels, tagging_dataset(), "test")
    assert result.multilabel and saved["test_mAP"] == result.mean_average_precision
