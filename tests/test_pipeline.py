"""Prune-page back end: the plan's cost before surgery, prune-and-evaluate, and the zip export."""

import io
import zipfile

import numpy as np
import pytest
import torch

from prunekit.data.datasets import read_speech_commands
from prunekit.evaluation.changes import class_changes, prediction_changes
from prunekit.evaluation.cost import count_macs
from prunekit.evaluation.paired import compare_evaluations
from prunekit.heads.cost import plan_cost
from prunekit.heads.pipeline import prune_and_evaluate, variant_zip
from prunekit.heads.planner import PATTERNS, THRESHOLDS, make_plan, plan_from_heads
from prunekit.heads.scoring import score
from prunekit.heads.surgery import apply_plan, load_plan
from prunekit.models import load_model


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_plan_cost_equals_counting_on_the_pruned_model(tiny_model, pattern, threshold):
    scores = score(tiny_model, "random", seed=1)
    dense_macs = count_macs(tiny_model)
    for sparsity in (0.0, 0.3, 0.6):
        plan = make_plan(scores, pattern, threshold, sparsity)
        pruned = apply_plan(tiny_model, plan)
        expected = plan_cost(plan, tiny_model, dense_macs)
        assert expected["parameters"] == sum(p.numel() for p in pruned.parameters())
        assert expected["macs_per_clip"] == count_macs(pruned)
        assert expected["attention_sparsity"] == pytest.approx(plan.attention_sparsity())


def test_plan_cost_with_an_empty_layer(tiny_model):
    plan = plan_from_heads(score(tiny_model, "magnitude"), {0: [], 1: [2]})
    pruned = apply_plan(tiny_model, plan)
    cost = plan_cost(plan, tiny_model, count_macs(tiny_model))
    assert cost["parameters"] == sum(p.numel() for p in pruned.parameters())
    assert cost["macs_per_clip"] == count_macs(pruned)


def test_prune_and_evaluate_leaves_the_base_alone_and_exports_a_loadable_zip(
        tiny_model_dir, tiny_speech_commands, tmp_path):
    model, extractor, labels = load_model(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = read_speech_commands(tiny_speech_commands)
    plan = make_plan(score(model, "magnitude"), "entire-head", "global", 0.5)
    variant = prune_and_evaluate(model, extractor, labels, plan, data, "test", repeats=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert variant.model is not model and variant.split == "test"
    assert list(variant.cost.index) == ["dense", "pruned"]
    assert variant.cost.loc["pruned", "parameters"] < variant.cost.loc["dense", "parameters"]
    assert variant.name == "magnitude entire-head global 50%"
    assert len(variant.evaluation.predictions) == 3  # one test clip per label
    assert variant.comparison is None  # no dense evaluation given

    data = variant_zip(variant, extractor, labels)
    archive = zipfile.ZipFile(io.BytesIO(data))
    archive.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / "magnitude-entire-head-global-50"
    assert {"config.json", "model.safetensors", "plan.json", "preprocessor_config.json"} <= {
        p.name for p in folder.iterdir()}
    reloaded, _, reloaded_labels = load_model(folder)
    assert reloaded_labels == labels and load_plan(folder) == plan
    x = torch.randn(2, extractor.max_length, extractor.num_mel_bins)
    with torch.no_grad():
        assert torch.allclose(reloaded(x).logits, variant.model.eval()(x).logits, atol=1e-6)
    # load_model also takes the zip itself, as the app downloads it.
    (tmp_path / "variant.zip").write_bytes(data)
    from_zip = load_model(tmp_path / "variant.zip").model
    with torch.no_grad():
        assert torch.equal(from_zip(x).logits, reloaded(x).logits)


def test_class_and_prediction_changes(tiny_model_dir, tiny_speech_commands):
    model, extractor, labels = load_model(tiny_model_dir)
    data = read_speech_commands(tiny_speech_commands)
    dense = prune_and_evaluate(model, extractor, labels, plan_from_heads(model, {0: [0, 1, 2, 3], 1: [0, 1, 2, 3]}),
                               data, "test", repeats=1).evaluation
    pruned = prune_and_evaluate(model, extractor, labels, plan_from_heads(model, {0: [], 1: []}),
                                data, "test", repeats=1).evaluation
    changes = class_changes(dense, pruned)
    assert sorted(changes["label"]) == sorted(labels)
    assert np.allclose(changes["change"], changes["pruned"] - changes["dense"])
    assert (changes["change"].diff().dropna() >= 0).all()  # worst first
    clips = prediction_changes(dense, pruned)
    assert len(clips) == 3
    assert (clips["differ"] == (clips["dense"] != clips["pruned"])).all()
    assert not prediction_changes(dense, dense)["differ"].any()
    # Given the dense evaluation, the variant carries the clip-by-clip comparison with it.
    compared = prune_and_evaluate(model, extractor, labels, plan_from_heads(model, {0: [], 1: []}), data, "test",
                                  dense=dense, repeats=1)
    assert compared.comparison == compare_evaluations(dense, compared.evaluation)
    assert compared.comparison.accuracy == (dense.accuracy, compared.accuracy)
    assert (compared.comparison.only_reference, compared.comparison.only_candidate) == (
        int((clips["dense_correct"] & ~clips["pruned_correct"]).sum()),
        int((~clips["dense_correct"] & clips["pruned_correct"]).sum()))
    with pytest.raises(ValueError, match="same clips in the same order; dense has 3 clips, pruned 6"):
        prune_and_evaluate(model, extractor, labels, plan_from_heads(model, {0: [], 1: []}), data, "train",
                           dense=dense, repeats=1)
