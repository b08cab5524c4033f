"""Multi-label data end to end (issue 16, item 2): a tagging manifest and a tagging model go
through scoring (BCE), planning, surgery, LoRA recovery (BCE), iterative sweeps and evaluation
(mAP, per-class AP, mAUC) in the library, the CLI and the app; the paired mAP interval is
checked against a brute-force loop over scikit-learn."""

import json
import re

import numpy as np
import pytest
import torch
from conftest import TINY_LABELS, _tiny_config
from sklearn.metrics import average_precision_score
from transformers import ASTFeatureExtractor, ASTForAudioClassification

from prunekit.data.datasets import open_dataset
from prunekit.errors import ConfigurationError
from prunekit.evaluation import changes
from prunekit.evaluation.metrics import MultilabelEvaluation, evaluate, multilabel_metrics, task_loss
from prunekit.evaluation.paired import (
    MapComparison,
    average_precisions,
    bootstrap_map_difference,
    compare,
    compare_map,
    map_resamples,
)
from prunekit.heads.pipeline import prune_and_evaluate
from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score, scoring_data
from prunekit.models import LoadedModel, anatomy, load_model
from prunekit.recovery.iterative import IterativeConfig, prune_iteratively, quality_column
from prunekit.recovery.lora import RecoveryConfig, recover
from prunekit.recovery.sweep import interpolated_table, table_markdown

EXTRACTOR = ASTFeatureExtractor(num_mel_bins=16, max_length=24)
FREQS = {"down": 300.0, "go": 900.0, "up": 2100.0}
# Each split has every tag on some clips and off on others (AP and AUC defined for every class).
TAGS = {
    "train": ["down", "go", "up", "down,go", "go,up", "down,up", "down,go,up", "up"],
    "validation": ["down", "go,up", "up", "down,go"],
    "test": ["down", "go", "up", "down,up", "go,up", "down,go,up"],
}


def _write_chord(path, tags, seed):
    """A 0.25 s clip where each tag sounds as its own tone (noisy), like a tagging clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(4000) / 16000
    wave = sum(0.3 * np.sin(2 * np.pi * (FREQS[tag] + 20 * rng.random()) * t) for tag in tags)
    wave = wave + 0.01 * rng.standard_normal(t.size)
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), 16000, subtype="PCM_16")


@pytest.fixture
def tagging(tmp_path):
    """A generated tagging manifest (file, labels, split), each clip 1-3 of the tiny model's tags."""
    root = tmp_path / "tagging"
    lines = ["file,labels,split"]
    for split, rows in TAGS.items():
        for i, tags in enumerate(rows):
            name = f"{split}-{i}.wav"
            _write_chord(root / "audio" / name, tags.split(","), seed=len(lines))
            lines.append(f'audio/{name},"{tags}",{split}')
    (root / "tags.csv").write_text("\n".join(lines) + "\n")
    return root / "tags.csv"


@pytest.fixture
def tagger():
    """A tiny AST tagger: the tiny model with one sigmoid per tag (multi-label problem type)."""
    torch.manual_seed(0)
    return ASTForAudioClassification(_tiny_config(problem_type="multi_label_classification")).eval()


@pytest.fixture
def tagger_dir(tmp_path, tagger):
    out = tmp_path / "tiny-tagger"
    tagger.save_pretrained(out)
    EXTRACTOR.save_pretrained(out)
    return out


# --- metrics and the paired mAP interval -------------------------------------------------------
def test_average_precisions_equal_sklearn_with_weights_and_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, (40, 4)) / 4  # many ties
    targets = (rng.random((40, 4)) < 0.4).astype(float)
    targets[:, 3] = 0  # a class without a positive: NaN
    weights = rng.integers(0, 3, (3, 40)).astype(float)
    got = average_precisions(scores, targets, weights)
    for r in range(3):
        for c in range(3):
            want = average_precision_score(targets[:, c], scores[:, c], sample_weight=weights[r])
            assert got[r, c] == pytest.approx(want, abs=1e-12)
    assert np.isnan(got[:, 3]).all()
    plain = average_precisions(scores, targets)
    ev = multilabel_metrics(torch.logit(torch.tensor(scores).clamp(0.01, 0.99)), targets, list("abcd"))
    assert np.nanmean(plain) == pytest.approx(ev.mean_average_precision, abs=1e-12)


def test_bootstrap_map_difference_equals_a_brute_force_loop():
    rng = np.random.default_rng(1)
    targets = (rng.random((30, 3)) < 0.4).astype(float)
    a, b = rng.random((30, 3)), rng.random((30, 3))
    low, high = bootstrap_map_difference(a, b, targets, resamples=60, seed=4, chunk=7)
    draws = np.random.default_rng(4).integers(0, 30, (60, 30))
    diffs = []
    for idx in draws:  # the same draws, each mAP from scikit-learn on the drawn clips
        maps = []
        for s in (a, b):
            aps = [
                average_precision_score(targets[idx, c], s[idx, c]) for c in range(3) if targets[idx, c].any()
            ]
            maps.append(np.mean(aps))
        diffs.append(maps[1] - maps[0])
    assert (low, high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
    assert bootstrap_map_difference(a, a, targets, resamples=20) == (0.0, 0.0)
    with pytest.raises(ConfigurationError, match=r"one shape \(N, C\)"):
        bootstrap_map_difference(a, b[:5], targets)


def test_compare_map_and_per_class_ap_changes():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    good = torch.tensor([[3.0, -3], [-3, 3], [3, 3], [-3, -3]])
    bad = torch.tensor([[-3.0, -3], [3, 3], [3, -3], [-3, 3]])
    dense = multilabel_metrics(good, targets, ["a", "b"])
    pruned = multilabel_metrics(bad, targets, ["a", "b"])
    result = compare(dense, pruned)
    assert isinstance(result, MapComparison)
    assert result.mean_average_precision == (1.0, pytest.approx(pruned.mean_average_precision))
    assert result.ci[0] <= result.difference <= result.ci[1] <= 0
    assert result.describe().startswith(f"pruned mAP is {1 - pruned.mean_average_precision:.3f} lower")
    ap = changes.class_ap_changes(dense, pruned)
    want = {
        k: average_precision_score(targets[:, i], torch.sigmoid(bad[:, i])) - 1 for i, k in enumerate("ab")
    }
    assert dict(zip(ap["label"], ap["change"])) == pytest.approx(want)
    tags = changes.tag_changes(dense, pruned)
    assert tags["dense"].tolist() == ["a", "b", "a", "a"]  # ties go to the first class
    assert tags["dense_correct"].tolist() == [True, True, True, False]
    assert tags["pruned"].tolist() == ["a", "a", "a", "b"]
    assert tags["pruned_correct"].tolist() == [True, False, True, False]
    with pytest.raises(ConfigurationError, match="same clips"):
        compare_map(dense, multilabel_metrics(good[:3], targets[:3], ["a", "b"]))
    assert result.resamples == 1000 and "1,000 resamples" in result.describe()
    # Large splits get fewer draws in proportion to clips x classes, never below 200.
    assert [map_resamples(n, c) for n, c in ((456, 14), (1330, 150), (4000, 100), (10231, 200))] == [
        1000,
        1000,
        500,
        200,
    ]


# --- scoring, recovery, iterative --------------------------------------------------------------
def test_task_loss_is_bce_averaged_over_classes():
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]])
    targets = torch.tensor([[1.0, 0, 1], [0, 0, 1]])
    by_hand = [
        np.mean(
            [
                -(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))
                for x, y in zip(r, t)
            ]
        )
        for r, t in zip(logits.tolist(), targets.tolist())
    ]
    assert task_loss(logits, targets, "none").tolist() == pytest.approx(by_hand, rel=1e-6)
    assert task_loss(logits, targets).item() == pytest.approx(np.mean(by_hand), rel=1e-6)
    assert task_loss(logits, targets, "sum").item() == pytest.approx(np.sum(by_hand), rel=1e-6)


def test_recovery_trains_and_validates_with_bce(tagger, tagging):
    data = open_dataset(tagging)
    validation = scoring_data(data, EXTRACTOR, TINY_LABELS, "validation")
    config = RecoveryConfig(train_clips=None, validation_clips=None, batch_size=4, lr=3e-3, epochs=4)
    recovered, history = recover(tagger, EXTRACTOR, TINY_LABELS, data, config=config)

    def bce(model):
        with torch.no_grad():
            return task_loss(model(validation.features).logits, validation.targets).item()

    assert "val_mAP" in history and "val_accuracy" not in history
    assert history["val_loss"].iloc[0] == pytest.approx(bce(tagger), rel=1e-5)
    kept = history[history["kept"]]
    assert kept["val_loss"].iloc[0] == history["val_loss"].min()
    assert kept["val_loss"].iloc[0] == pytest.approx(bce(recovered), rel=1e-4)
    assert bce(recovered) < bce(tagger)
    first = multilabel_metrics(
        tagger(validation.features).logits.detach(), validation.targets.numpy(), TINY_LABELS
    )
    assert history["val_mAP"].iloc[0] == pytest.approx(first.mean_average_precision)


def test_iterative_run_records_map(tagger, tagging):
    config = IterativeConfig(
        scorer="fisher",
        pattern="per-head",
        threshold="global",
        schedule=(0.25, 0.5),
        recovery=RecoveryConfig(train_clips=None, validation_clips=None, batch_size=4, lr=1e-3),
        latency_repeats=1,
    )
    data = open_dataset(tagging)
    state = prune_iteratively(LoadedModel(tagger, EXTRACTOR, list(TINY_LABELS)), data, config)
    steps = state.results()
    assert "accuracy_after" not in steps and steps["map_after"].notna().all()
    assert list(steps["attention_sparsity"]) == pytest.approx([0.0, 0.25, 0.5])
    dense = evaluate(tagger, EXTRACTOR, TINY_LABELS, data, "test")
    assert steps["map_after"].iloc[0] == pytest.approx(dense.mean_average_precision)
    final = evaluate(state.model, EXTRACTOR, TINY_LABELS, data, "test")
    assert steps["map_after"].iloc[-1] == pytest.approx(final.mean_average_precision)
    assert (steps["val_loss_after"][1:] <= steps["val_loss_before"][1:]).all()
    results = steps.assign(scorer="fisher", pattern="per-head", threshold="global", seed=0)
    assert quality_column(results) == "map_after"
    table = interpolated_table(results)
    assert table["dense"].iloc[0] == pytest.approx(dense.mean_average_precision)  # a fraction, not %
    assert table["50%"].iloc[0] == pytest.approx(steps["map_after"].iloc[-1])
    assert f"{dense.mean_average_precision:.4f}" in table_markdown(table, digits=4)


def test_prune_and_evaluate_gives_map_and_its_paired_interval(tagger, tagging):
    data = open_dataset(tagging)
    plan = make_plan(
        score(tagger, "fisher", scoring_data(data, EXTRACTOR, TINY_LABELS), cache=False),
        "entire-head",
        "global",
        0.5,
    )
    dense = evaluate(tagger, EXTRACTOR, TINY_LABELS, data, "test")
    variant = prune_and_evaluate(tagger, EXTRACTOR, TINY_LABELS, plan, data, "test", dense=dense, repeats=1)
    assert isinstance(variant.evaluation, MultilabelEvaluation) and variant.evaluation.metric == "mAP"
    assert variant.headline == pytest.approx(
        evaluate(variant.model, EXTRACTOR, TINY_LABELS, data, "test").mean_average_precision
    )
    assert isinstance(variant.comparison, MapComparison)
    assert variant.comparison.mean_average_precision == pytest.approx((dense.headline, variant.headline))
    assert variant.comparison.clips == 6


def test_listen_classifies_a_tagger_with_sigmoids(tagger):
    from prunekit.data.audio import features
    from prunekit.evaluation.windows import classify

    wave = np.sin(np.linspace(0, 400, 3000)).astype(np.float32)  # within one 240 ms window
    result = classify(tagger, EXTRACTOR, TINY_LABELS, wave)
    assert anatomy.is_multilabel(tagger) and result.multilabel
    with torch.no_grad():
        logits = tagger(features([wave], EXTRACTOR)).logits[0]
    assert result.probabilities == pytest.approx(torch.sigmoid(logits).numpy(), abs=1e-6)


# --- the command line ---------------------------------------------------------------------------
def test_cli_prunes_a_tagger_and_prints_map(tagger_dir, tagging, run_main, tmp_path):
    out = run_main(
        "prune",
        "--model",
        tagger_dir,
        "--data",
        tagging,
        "--scorer",
        "fisher",
        "--pattern",
        "entire-head",
        "--sparsity",
        "0.5",
        "--out",
        tmp_path / "pruned",
        "--repeats",
        "1",
        cache=tmp_path / "cache",
    )
    assert out.returncode == 0, out.stderr
    assert "accuracy" not in out.stdout
    model, extractor, labels = load_model(tmp_path / "pruned")
    assert anatomy.is_multilabel(model)  # the tagger stays a tagger after surgery and reload
    pruned = evaluate(model, extractor, labels, open_dataset(tagging), "test")
    row = re.search(r"^mAP\s+(\S+)\s+(\S+)", out.stdout, re.M)
    assert float(row.group(2)) == pytest.approx(pruned.mean_average_precision, abs=5e-4)
    assert re.search(
        r"paired, clip by clip: pruned mAP is .* 95 % CI .* \(paired bootstrap over 6 clips", out.stdout
    )


def test_cli_sweep_on_a_tagger_tabulates_map_and_the_app_draws_it(tagger_dir, tagging, run_main, tmp_path):
    from prunekit.store import cache_dir

    folder = cache_dir() / "sweeps" / "tagging-grid"  # where the Experiments page looks
    out = run_main(
        "sweep",
        "--model",
        tagger_dir,
        "--data",
        tagging,
        "--out",
        folder,
        "--scorers",
        "fisher",
        "--patterns",
        "entire-head",
        "--thresholds",
        "global",
        "--steps",
        "1",
        "--fraction",
        "0.5",
        "--train-clips",
        "all",
        "--val-clips",
        "all",
        "--batch-size",
        "4",
        "--repeats",
        "1",
    )
    assert out.returncode == 0, out.stderr
    assert "mAP after recovery, interpolated" in out.stdout
    written = (folder / "table.md").read_text()
    dense = evaluate(*load_model(tagger_dir), open_dataset(tagging), "test").mean_average_precision
    assert f"| EH | G | Fisher | {dense:.4f} |" in written
    assert "mAP after recovery" in (folder / "accuracy.html").read_text()
    at = _app("experiments", tagger_dir, tagging, exp_folder="tagging-grid")
    assert any(m.value.startswith("**mAP after recovery at each attention sparsity**") for m in at.markdown)
    table = at.dataframe[0].value
    assert table["original"].tolist() == [round(dense, 4)]
    assert any("mAP after recovery" in c.proto.spec for c in at.get("plotly_chart"))


# --- the app --------------------------------------------------------------------------------------
def _app(page, tagger_dir, tagging, **state):
    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    sidebar = {
        "model_kind": "Local folder",
        "model_ref": str(tagger_dir),
        "data_kind": "CSV manifest",
        "data_ref": str(tagging),
        "data_preset": "detect from header",
        "score_clips": 8,
        **state,
    }
    for key, value in sidebar.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_app_overview_prune_and_listen_on_a_tagger(tagger_dir, tagging):
    at = _app("overview", tagger_dir, tagging)
    metrics = {m.label: m.value for m in at.metric}
    dense = evaluate(*load_model(tagger_dir), open_dataset(tagging), "test")
    assert metrics[f"mAP on the test split of {open_dataset(tagging).name}"] == f"{dense.headline:.3f}"
    assert metrics["mAUC"] == f"{dense.summary['mAUC'].iloc[0]:.3f}"

    at.switch_page("pages/prune.py").run()
    at.selectbox(key="prune_scorer").set_value("fisher").run()
    at.selectbox(key="prune_pattern").set_value("entire-head").run()
    at.button(key="prune_apply").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    variant = at.session_state["_prunekit_history"][0].variant
    metrics = {m.label: m.value for m in at.metric}
    assert (
        metrics["Pruned mAP"] == f"{variant.headline:.3f}"
        and metrics["Original mAP"] == f"{dense.headline:.3f}"
    )
    assert "Pruned accuracy" not in metrics
    paired = [m.value for m in at.markdown if m.value.startswith("Clip by clip against the original:")]
    assert len(paired) == 1 and "paired bootstrap over 6 clips" in paired[0]
    assert any("Average precision change per class" in m.value for m in at.markdown)
    table = next(d.value for d in at.dataframe if "Variant" in d.value.columns)
    assert table["mAP"].tolist() == pytest.approx([dense.headline, variant.headline])

    at.switch_page("pages/listen.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="listen_class").set_value("go").run()
    shown = at.dataframe[0].value
    assert len(shown) == 3 and all("go" in tags.split(" | ") for tags in shown["label"])
    truth = [m.value for m in at.markdown if m.value.startswith("True tags:")]
    picked = shown["label"].iloc[0].split(" | ")  # the first clip of the tag is the one shown
    assert truth and truth[0].startswith(f"True tags: **{', '.join(picked)}**")
    chart = next(
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if "Original" in c.proto.spec and "Pruned" in c.proto.spec
    )
    for bars in chart["data"]:  # 3 classes: the top 5 holds them all, each true tag marked
        assert sorted(bars["y"]) == sorted(t + " \u2713" if t in picked else t for t in TINY_LABELS)

    at.switch_page("pages/tokens.py").run()
    assert not at.exception, at.exception
    assert any("is multi-label: token pruning is measured by accuracy" in i.value for i in at.info)
