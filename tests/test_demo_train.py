"""demo-train end to end at a toy size: the real data path, a tiny AST, one epoch."""

import json

import pytest

from prunekit.data.datasets import demo_dataset
from prunekit.demo.train import DemoTrainConfig, train_demo
from prunekit.models import load_model


@pytest.mark.slow
@pytest.mark.timeout(1800)  # featurises the 13,440 demo clips and trains an epoch: minutes on 2 shared cores
def test_train_demo_writes_a_loadable_model(tmp_path, real_cache):
    # one augmented copy, read from the first epoch: the waveform-augmentation path at its cheapest
    cfg = DemoTrainConfig(
        hidden_size=32,
        layers=2,
        heads=4,
        intermediate_size=64,
        epochs=1,
        batch_size=128,
        views=1,
        clean_epochs=0,
    )
    record = train_demo(cfg, tmp_path / "demo", quiet=True)
    model, extractor, labels = load_model(tmp_path / "demo")
    assert len(labels) == 35 and model.config.num_hidden_layers == 2
    saved = json.loads((tmp_path / "demo" / "training.json").read_text())
    assert saved["config"]["hidden_size"] == 32 and saved["config"]["data_seed"] == 0
    assert saved["config"]["views"] == 1 and saved["config"]["augment"]["speed"] == [0.85, 1.15]
    assert saved["test_clips"] == record["test_clips"] > 0
    # The recorded accuracy is the saved model's on the held-out voices (recomputed here).
    from prunekit.evaluation.metrics import evaluate

    assert saved["test_accuracy"] == evaluate(model, extractor, labels, demo_dataset(), "test").accuracy
    # the feature extractor carries the training set's statistics, not AudioSet's defaults
    assert extractor.mean != pytest.approx(-4.2677393) and extractor.std > 0
