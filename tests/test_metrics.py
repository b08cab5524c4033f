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
    assert (
        per.loc["a", "accuracy"] == 1.0
        and per.loc["b", "accuracy"] == 1.0
        and per.loc["c", "accuracy"] == 0.0
    )
    assert per.loc["c", "clips"] == 2
    assert (
        ev.confusion.loc["c", "b"] == 1
        and ev.confusion.loc["c", "a"] == 1
        and ev.confusion.loc["a", "a"] == 1
    )
    assert ev.confusion.to_numpy().sum() == 4
    assert list(ev.predictions["predicted"]) == ["a", "b", "b", "a"]
    assert ev.predictions["confidence"][2] == pytest.approx(p(rows[2], 1))


def test_mean_average_precision_by_hand():
    # class 0: scores .9 (+) .8 (-) .7 (+) -> AP = (1/1 + 2/3) / 2; class 1: perfect -> 1; class 2: no positive
    logits = torch.logit(torch.tensor([[0.9, 0.2, 0.5], [0.8, 0.1, 0.5], [0.7, 0.9, 0.5]]))
    targets = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    ev = multilabel_metrics(logits, targets, LABELS)
    frame = ev.per_class.set_index("label")
    assert frame.loc["a", "ap"] == pytest.approx((1 + 2 / 3) / 2)
    assert frame.loc["b", "ap"] == pytest.approx(1.0)
    assert np.isnan(frame.loc["c", "ap"])
    assert ev.mean_average_precision == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


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
    assert ev.summary["loss"][0] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6
    )
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


def test_latency_ratio_is_the_median_of_per_round_ratios_with_a_bootstrap_interval():
    from prunekit.evaluation.cost import LatencyRatio, _ratio

    reference = np.array([10.0, 20.0, 10.0, 10.0, 40.0])  # the machine's speed drifts between rounds
    model = 0.8 * reference * np.array([1.0, 1.0, 1.01, 0.99, 1.0])
    r = _ratio(reference, model)
    assert r.median == pytest.approx(0.8) and r.rounds == 5
    assert r.low <= r.median <= r.high and r.high < 1.0 and r.measurable
    assert r.describe() == f"runs 20% faster (95 % CI {1 - r.high:.0%} to {1 - r.low:.0%})"
    noisy = _ratio(reference, reference * np.array([0.9, 1.1, 0.95, 1.05, 1.0]))
    assert noisy.low < 1.0 < noisy.high and not noisy.measurable
    assert noisy.describe().startswith("no measurable difference in speed (ratio 1.00")
    assert LatencyRatio(1.3, 1.2, 1.4, 9).describe() == "runs 30% slower (95 % CI 20% to 40%)"


def test_compare_cost_stores_the_ratio_to_the_first_model(tiny_model):
    from prunekit.evaluation.cost import compare_cost, ratio_from

    table = compare_cost({"a": tiny_model, "b": tiny_model}, batches=(1,), repeats=4)
    first = ratio_from(table.loc["a"], 1)
    assert (first.median, first.low, first.high, first.rounds) == (1.0, 1.0, 1.0, 4)  # itself, exactly
    second = ratio_from(table.loc["b"], 1)
    assert second.low <= second.median <= second.high and second.rounds == 4


def test_an_evaluation_can_be_cached_on_disk_and_a_damaged_file_is_recomputed(
    tiny_model_dir, tiny_speech_commands, monkeypatch, tmp_path
):
    from prunekit.evaluation import metrics
    from prunekit.models import load_model

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    loaded, data = load_model(tiny_model_dir), read_speech_commands(tiny_speech_commands)
    first = evaluate(*loaded, data, "test", cache=True)
    (path,) = (tmp_path / "evaluations").glob("*.safetensors")
    calls = []
    real = metrics.predict_logits
    monkeypatch.setattr(metrics, "predict_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = evaluate(*loaded, data, "test", cache=True)
    assert calls == [] and again.predictions.equals(first.predictions)  # read back, model not run
    path.write_bytes(b"not safetensors")
    assert evaluate(*loaded, data, "test", cache=True).predictions.equals(first.predictions) and calls == [1]
    with torch.no_grad():  # other weights are another key
        next(loaded.model.parameters()).add_(1.0)
    evaluate(*loaded, data, "test", cache=True)
    assert calls == [1, 1] and len(list((tmp_path / "evaluations").glob("*.safetensors"))) == 2


def test_the_app_times_batch_32_only_where_it_is_cheap():
    from prunekit.evaluation.cost import LARGE_BATCH_MACS, batches_to_time

    assert batches_to_time(LARGE_BATCH_MACS) == (1, 32)
    assert batches_to_time(LARGE_BATCH_MACS + 1) == (1,)  # AST-base on a CPU: 12.8 G MACs a clip
    assert batches_to_time(LARGE_BATCH_MACS + 1, "cuda:0") == (1, 32)


def test_timed_batches_reads_the_latency_columns_of_a_frame_or_a_row():
    import pandas as pd

    from prunekit.evaluation.cost import timed_batches

    frame = pd.DataFrame(
        {"parameters": [1], "latency_b32_ms": [2.0], "latency_b1_ms": [1.0], "latency_b1_ratio": [1]}
    )
    assert timed_batches(frame) == [1, 32] and timed_batches(frame.iloc[0]) == [1, 32]
    assert timed_batches(frame.drop(columns="latency_b32_ms")) == [1]
