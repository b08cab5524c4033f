import math

import numpy as np
import pytest
import torch

from prunekit.data.datasets import label_indices, read_speech_commands
from prunekit.data.features import clip_features
from prunekit.errors import DatasetError
from prunekit.evaluation.cost import cost, count_macs
from prunekit.evaluation.metrics import classification_metrics, evaluate, multilabel_metrics, predict_logits
from prunekit.models import anatomy

LABELS = ["a", "b", "c"]


def test_classification_metrics_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]])
    targets = np.array([0, 1, 2, 2])
    ev = classification_metrics(logits, targets, LABELS)
    assert ev.accuracy == pytest.approx(0.5)
    p = lambda row, k: math.exp(row[k]) / sum(math.exp(v) for v in row)  # noqa: E731
    rows = logits.tolist()
    expected_loss = -np.mean([math.log(p(rows[i], targets[i])) for i in range(4)])
    assert ev.summary["loss"][0] == pytest.approx(expected_loss, rel=1e-6)
    per = ev.per_class.set_index("label")
    assert per.loc["a", "accuracy"] == 1.0 and per.loc["b", "accuracy"] == 1.0 and per.loc["c", "accuracy"] == 0.0
    assert per.loc["c", "clips"] == 2
    assert ev.confusion.loc["c", "b"] == 1 and ev.confusion.loc["c", "a"] == 1 and ev.confusion.loc["a", "a"] == 1
    assert ev.confusion.to_numpy().sum() == 4
    assert list(ev.predictions["predicted"]) == ["a", "b", "b", "a"]
    assert ev.predictions["confidence"][2] == pytest.approx(p(rows[2], 1))


def test_mean_average_precision_by_hand():
    # class 0: scores .9 (+) .8 (-) .7 (+) -> AP = (1/1 + 2/3) / 2; class 1: perfect -> 1; class 2: no positive
    logits = torch.logit(torch.tensor([[0.9, 0.2, 0.5], [0.8, 0.1, 0.5], [0.7, 0.9, 0.5]]))
    targets = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    frame = multilabel_metrics(logits, targets, LABELS).set_index("label")
    assert frame.loc["a", "ap"] == pytest.approx((1 + 2 / 3) / 2)
    assert frame.loc["b", "ap"] == pytest.approx(1.0)
    assert np.isnan(frame.loc["c", "ap"])
    assert frame.loc["mAP", "ap"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_label_alignment_names_unknown_labels(tiny_speech_commands):
    clips = read_speech_commands(tiny_speech_commands).split("test")
    assert sorted(label_indices(clips, ["up", "go", "down"]).tolist()) == [0, 1, 2]
    with pytest.raises(DatasetError, match="'down'"):
        label_indices(clips, ["up", "go"])


def test_evaluate_on_a_dataset(tiny_model, tiny_model_dir, tiny_speech_commands):
    from prunekit.models import load_model

    model, extractor, labels = load_model(tiny_model_dir)
    data = read_speech_commands(tiny_speech_commands)
    seen = []
    ev = evaluate(model, extractor, labels, data, "test", progress=lambda d, n: seen.append((d, n)))
    assert ev.summary["clips"][0] == 3
    # The same numbers by hand: the model's logits on the same features, against the labels.
    clips = data.split("test")
    logits = predict_logits(model, clip_features(clips, extractor))
    targets = torch.tensor([labels.index(c.label) for c in clips])
    assert ev.accuracy == pytest.approx((logits.argmax(-1) == targets).double().mean().item())
    assert ev.summary["loss"][0] == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)
    assert seen[-1][0] == seen[-1][1]
    again = evaluate(model, extractor, labels, data, "test")  # features now from the disk cache
    assert again.predictions.equals(ev.predictions)


def test_macs_match_the_architecture(tiny_model):
    cfg = tiny_model.config
    d, n_layers, inter, c = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.num_labels
    f_dim = (cfg.num_mel_bins - 16) // cfg.frequency_stride + 1
    t_dim = (cfg.max_length - 16) // cfg.time_stride + 1
    n = f_dim * t_dim + 2
    per_layer = n * (4 * d * d + 2 * d * inter) + 2 * n * n * d  # projections, MLP, QK^T and AV
    expected = f_dim * t_dim * d * 16 * 16 + n_layers * per_layer + d * c
    assert count_macs(tiny_model) == expected
    assert count_macs(tiny_model, batch=3) == 3 * expected


def test_cost_leaves_the_model_alone(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    impl = tiny_model.config._attn_implementation
    row = cost(tiny_model, repeats=3).iloc[0]
    assert row["parameters"] == sum(p.numel() for p in tiny_model.parameters())
    assert row["attention_parameters"] == 2 * 4 * (32 * 32 + 32)
    # Latency is only checked for being measured; its size is the benchmarks' business.
    assert row["latency_b1_ms"] > 0 and row["latency_b32_ms"] > 0
    assert tiny_model.config._attn_implementation == impl
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert anatomy.attention_parameters(tiny_model) == row["attention_parameters"]
