"""CSV manifests: each preset on a tiny copy of its layout (our own WAVs), every bad manifest's
message, multi-label targets and metrics against scikit-learn, and the CLI end to end."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from conftest import TINY_LABELS
from sklearn.metrics import average_precision_score, roc_auc_score
from transformers import ASTFeatureExtractor

from prunekit.data.datasets import hash_split, label_indices, label_targets, open_dataset
from prunekit.data.manifest import read_any, read_manifest, read_preset
from prunekit.errors import ConfigurationError, DatasetError
from prunekit.evaluation.metrics import evaluate, multilabel_metrics
from prunekit.heads.scoring import scoring_data


def _split_names(data) -> dict[str, set[str]]:
    return {s: {c.path.name for c in data.clips if c.split == s} for s in ("train", "validation", "test")}


# --- tiny layouts ------------------------------------------------------------------------------------
@pytest.fixture
def esc50(tmp_path, write_tone):
    """ESC-50's layout: meta/esc50.csv and audio/<fold>-<src>-<take>-<target>.wav; 3 classes x 5 folds."""
    root = tmp_path / "ESC-50-master"
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category in enumerate(TINY_LABELS):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            write_tone(root / "audio" / name, 300 + 100 * target + fold, seed=fold)
            rows.append(f"{name},{fold},{target},{category},False,{100 + target},A")
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root / "meta" / "esc50.csv"


@pytest.fixture
def urbansound8k(tmp_path, write_tone):
    """UrbanSound8K's layout: metadata/UrbanSound8K.csv, audio/fold<k>/<fsID>-<classID>-0-0.wav; 2 classes x 10 folds."""
    root = tmp_path / "UrbanSound8K"
    rows = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    for fold in range(1, 11):
        for class_id, name in ((3, "dog_bark"), (8, "siren")):
            file = f"{1000 + fold}-{class_id}-0-0.wav"
            write_tone(root / "audio" / f"fold{fold}" / file, 200 + 50 * class_id + fold)
            rows.append(f"{file},{1000 + fold},0.0,0.25,1,{fold},{class_id},{name}")
    (root / "metadata").mkdir()
    (root / "metadata" / "UrbanSound8K.csv").write_text("\n".join(rows) + "\n")
    return root / "metadata" / "UrbanSound8K.csv"


FSD_DEV = {  # fname -> (labels, split)
    "101": ("Bark,Dog", "train"),
    "102": ("Dog", "train"),
    "103": ("Speech", "train"),
    "104": ("Speech,Bark", "val"),
}
FSD_EVAL = {"201": "Dog,Speech", "202": "Bark"}


@pytest.fixture
def fsd50k(tmp_path, write_tone):
    """FSD50K's layout: FSD50K.ground_truth/{dev,eval}.csv, FSD50K.{dev,eval}_audio/<fname>.wav."""
    root = tmp_path / "FSD50K"
    truth = root / "FSD50K.ground_truth"
    truth.mkdir(parents=True)
    dev = ["fname,labels,mids,split"] + [
        f'{f},"{labels}","/m/x",{split}' for f, (labels, split) in FSD_DEV.items()
    ]
    evaluation = ["fname,labels,mids"] + [f'{f},"{labels}","/m/x"' for f, labels in FSD_EVAL.items()]
    (truth / "dev.csv").write_text("\n".join(dev) + "\n")
    (truth / "eval.csv").write_text("\n".join(evaluation) + "\n")
    for i, f in enumerate(FSD_DEV):
        write_tone(root / "FSD50K.dev_audio" / f"{f}.wav", 300 + 40 * i)
    for i, f in enumerate(FSD_EVAL):
        write_tone(root / "FSD50K.eval_audio" / f"{f}.wav", 700 + 40 * i)
    return truth / "dev.csv"


AUDIOSET_CLASSES = [
    ("0", "/m/09x0r", "Speech"),
    ("1", "/m/05zppz", "Male speech, man speaking"),
    ("2", "/m/0bt9lr", "Dog"),
]
AUDIOSET_TRAIN = [f"seg{i:02d}" for i in range(12)]
AUDIOSET_EVAL = ["evalA", "evalB"]


def _segments(ids, labels) -> str:
    head = (
        "# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=2, num_segs=2, num_unique_labels=3, "
        "num_positive_labels=3\n# YTID, start_seconds, end_seconds, positive_labels\n"
    )
    return head + "".join(f'{i}, 30.000, 40.000, "{lab}"\n' for i, lab in zip(ids, labels, strict=True))


@pytest.fixture
def audioset(tmp_path, write_tone):
    """AudioSet's CSVs (segments with a comment header, class_labels_indices.csv) and audio/<YTID>.wav."""
    root = tmp_path / "audioset"
    root.mkdir()
    (root / "class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{m},"{n}"\n' for i, m, n in AUDIOSET_CLASSES)
    )
    train_labels = [
        "/m/09x0r,/m/05zppz" if i % 3 == 0 else "/m/0bt9lr" if i % 3 == 1 else "/m/09x0r"
        for i in range(len(AUDIOSET_TRAIN))
    ]
    (root / "balanced_train_segments.csv").write_text(_segments(AUDIOSET_TRAIN, train_labels))
    (root / "eval_segments.csv").write_text(_segments(AUDIOSET_EVAL, ["/m/0bt9lr,/m/09x0r", "/m/05zppz"]))
    for i, ytid in enumerate(AUDIOSET_TRAIN + AUDIOSET_EVAL):
        write_tone(root / "audio" / f"{ytid}.wav", 250 + 30 * i)
    return root / "balanced_train_segments.csv"


# --- the presets ------------------------------------------------------------------------------------
def test_esc50_preset_folds_and_labels(esc50):
    for data in (open_dataset(esc50), open_dataset(f"esc50:{esc50}"), read_preset("esc50", esc50)):
        assert data.layout == "esc50" and not data.multilabel
        assert data.labels == tuple(TINY_LABELS)
        assert data.root == esc50.parent.parent.resolve()  # meta/ is the metadata folder, audio/ beside it
        names = _split_names(data)
        assert names["test"] == {f"5-{100 + t}-A-{t}.wav" for t in range(3)}
        assert names["validation"] == {f"4-{100 + t}-A-{t}.wav" for t in range(3)}
        assert names["train"] == {f"{f}-{100 + t}-A-{t}.wav" for f in (1, 2, 3) for t in range(3)}
        assert {c.path.name: c.label for c in data.clips}["3-102-A-2.wav"] == "up"
        assert all(c.labels == (c.label,) and c.path.is_file() for c in data.clips)


def test_urbansound8k_preset_reads_fold_folders(urbansound8k):
    data = open_dataset(urbansound8k)
    assert data.layout == "urbansound8k" and data.labels == ("dog_bark", "siren")
    assert {c.path.parent.name for c in data.split("test")} == {"fold10"}
    assert {c.path.parent.name for c in data.split("validation")} == {"fold9"}
    assert {c.path.parent.name for c in data.split("train")} == {f"fold{k}" for k in range(1, 9)}
    assert {(c.path.name, c.label) for c in data.split("test")} == {
        ("1010-3-0-0.wav", "dog_bark"),
        ("1010-8-0-0.wav", "siren"),
    }
    assert data.counts().loc["siren"].tolist() == [8, 1, 1]


def test_fsd50k_preset_multilabel_dev_and_eval(fsd50k):
    for data in (open_dataset(fsd50k), open_dataset(f"fsd50k:{fsd50k.parent / 'eval.csv'}")):
        assert data.layout == "fsd50k" and data.multilabel
        assert data.labels == ("Bark", "Dog", "Speech")
        clips = {c.path.stem: c for c in data.clips}
        assert {k: (c.labels, c.split) for k, c in clips.items()} == {
            "101": (("Bark", "Dog"), "train"),
            "102": (("Dog",), "train"),
            "103": (("Speech",), "train"),
            "104": (("Speech", "Bark"), "validation"),
            "201": (("Dog", "Speech"), "test"),
            "202": (("Bark",), "test"),
        }
        assert clips["201"].path.parent.name == "FSD50K.eval_audio" and clips["101"].label == "Bark | Dog"
        assert data.counts().loc["Bark"].tolist() == [1, 1, 1]  # a clip counts under each of its labels


def test_audioset_preset_class_table_and_hash_validation(audioset):
    data = open_dataset(audioset)
    assert data.layout == "audioset" and data.multilabel
    assert data.labels == (
        "Dog",
        "Male speech, man speaking",
        "Speech",
    )  # mids resolved through the class table
    clips = {c.path.stem: c for c in data.clips}
    assert clips["seg00"].labels == ("Speech", "Male speech, man speaking")
    assert clips["evalA"].labels == ("Dog", "Speech") and clips["evalA"].split == "test"
    expected = {y: hash_split(f"audio/{y}.wav", 0.1, 0.0) for y in AUDIOSET_TRAIN}
    assert {y: clips[y].split for y in AUDIOSET_TRAIN} == expected
    assert {c.path.stem for c in data.split("test")} == set(AUDIOSET_EVAL)
    assert data.split("validation")  # 12 files: the hash sends some to validation (checked: not empty)


def test_generic_manifest_guesses_columns_and_hash_splits(tmp_path, write_tone):
    files = [f"clips/{i}.wav" for i in range(30)]
    for i, f in enumerate(files):
        write_tone(tmp_path / f, 200 + 10 * i)
    (tmp_path / "m.csv").write_text(
        "path,label\n" + "".join(f"{f},{TINY_LABELS[i % 3]}\n" for i, f in enumerate(files))
    )
    data = open_dataset(tmp_path / "m.csv")
    assert data.layout == "manifest" and data.labels == tuple(TINY_LABELS) and not data.multilabel
    assert {c.path.name: c.split for c in data.clips} == {
        f.split("/")[1]: hash_split(f, 0.1, 0.1) for f in files
    }
    explicit = read_manifest(
        tmp_path / "m.csv", file_column="path", label_columns="label", validation=0.1, test=0.1
    )
    assert explicit.clips == data.clips


def test_generic_multilabel_columns_and_split_names(tmp_path, write_tone):
    rows = [("a.wav", "down", "go", "train"), ("b.wav", "up", "", "val"), ("c.wav", "go", "up", "eval")]
    for i, (f, *_rest) in enumerate(rows):
        write_tone(tmp_path / f, 300 + 50 * i)
    (tmp_path / "m.csv").write_text("file,first,second,set\n" + "".join(",".join(r) + "\n" for r in rows))
    data = read_manifest(
        tmp_path / "m.csv", file_column="file", label_columns=["first", "second"], split_column="set"
    )
    assert data.multilabel
    assert [(c.path.name, c.labels, c.split) for c in data.clips] == [
        ("a.wav", ("down", "go"), "train"),
        ("b.wav", ("up",), "validation"),
        ("c.wav", ("go", "up"), "test"),
    ]


# --- bad manifests -----------------------------------------------------------------------------------
def _rewrite(path, edit):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_missing_files_are_counted(esc50):
    for name in ("1-100-A-0.wav", "2-101-A-1.wav"):
        (esc50.parent.parent / "audio" / name).unlink()
    with pytest.raises(
        DatasetError, match=r"2 files named in esc50\.csv are missing, e\.g\. 1-100-A-0\.wav"
    ) as err:
        open_dataset(esc50)
    assert "esc50.csv line 2" in str(err.value) and str(esc50.parent.parent / "audio") in str(err.value)


def test_unknown_labels_are_counted(audioset):
    _rewrite(
        audioset.parent / "eval_segments.csv", lambda lines: [*lines, 'evalC, 0.0, 10.0, "/m/nope,/m/0bt9lr"']
    )
    with pytest.raises(
        DatasetError,
        match=r"1 label named in balanced_train_segments\.csv and eval_segments\.csv is not in the class table "
        r"class_labels_indices\.csv \(1 mention\), e\.g\. /m/nope \(1\)",
    ):
        open_dataset(audioset)


def test_empty_split_names_the_folds(esc50):
    _rewrite(esc50, lambda lines: [line for line in lines if not line.startswith("5-")])
    with pytest.raises(
        DatasetError,
        match=r"The test split of esc50\.csv is empty \(12 rows: train 9, validation 3, "
        r"test 0\); column 'fold' marks it .* or fold 5\.",
    ):
        open_dataset(esc50)


def test_duplicated_rows_are_counted(esc50):
    _rewrite(esc50, lambda lines: [*lines, lines[1], lines[2]])
    with pytest.raises(
        DatasetError,
        match=r"2 files are named more than once in esc50\.csv \(4 rows\), "
        r"e\.g\. 1-100-A-0\.wav \(lines 2, 17\)",
    ):
        open_dataset(esc50)


def test_paths_outside_the_root_are_refused(tmp_path, write_tone):
    root = tmp_path / "data"
    write_tone(root / "in.wav", 300)
    outside = write_tone(tmp_path / "secret.wav", 400)
    for bad in ("../secret.wav", str(outside)):
        (root / "m.csv").write_text(f"file,label\nin.wav,a\n{bad},b\n")
        with pytest.raises(
            DatasetError,
            match=re.escape(
                f"1 file named in m.csv lies outside the dataset folder "
                f"{root.resolve()}, e.g. {bad} (m.csv line 3)"
            ),
        ):
            open_dataset(root / "m.csv")
    write_tone(root / "v.wav", 500)
    os.symlink(outside, root / "link.wav")
    (root / "m.csv").write_text("file,label,split\nin.wav,a,train\nv.wav,a,val\nlink.wav,b,test\n")
    with pytest.raises(
        DatasetError, match=r"1 file named in m\.csv leads outside .* through a symlink, e\.g\. link\.wav"
    ):
        open_dataset(root / "m.csv")
    os.symlink(tmp_path, root / "up")  # a folder that leads out
    (root / "m.csv").write_text("file,label,split\nin.wav,a,train\nv.wav,a,val\nup/secret.wav,b,test\n")
    with pytest.raises(DatasetError, match=r"1 file named in m\.csv leads outside .* e\.g\. up/secret\.wav"):
        open_dataset(root / "m.csv")


def test_unknown_preset_and_missing_column(esc50):
    with pytest.raises(
        DatasetError,
        match=r"Unknown manifest preset 'esc51'; presets: esc50, urbansound8k, fsd50k, "
        r"audioset",
    ):
        open_dataset(f"esc51:{esc50}")
    _rewrite(
        esc50, lambda lines: [",".join(c for i, c in enumerate(line.split(",")) if i != 1) for line in lines]
    )
    with pytest.raises(
        DatasetError,
        match=r"esc50\.csv has no column 'fold' \(its columns: filename, target, "
        r"category, esc10, src_file, take\)",
    ):
        read_preset("esc50", esc50)


def test_other_bad_rows(tmp_path, write_tone, fsd50k):
    write_tone(tmp_path / "a.wav", 300)
    (tmp_path / "m.csv").write_text("file,label,split\na.wav,,train\n,b,test\n")
    with pytest.raises(
        DatasetError, match=r"1 row of m\.csv has no file in column 'file', e\.g\. m\.csv line 3"
    ):
        open_dataset(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("file,label,split\na.wav,,train\n")
    with pytest.raises(
        DatasetError, match=r"1 row of m\.csv has no label in 'label', e\.g\. a\.wav \(m\.csv line 2\)"
    ):
        open_dataset(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("file,label,split\na.wav,x,later\n")
    with pytest.raises(
        DatasetError,
        match=r"Column 'split' of m\.csv holds 1 cell that is neither fold numbers nor "
        r"split names: 'later' \(1 row\)",
    ):
        open_dataset(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("wave,what\na.wav,x\n")
    with pytest.raises(
        DatasetError,
        match=r"Cannot tell which columns of m\.csv name the files \(its columns: wave, "
        r"what\)",
    ):
        read_any(tmp_path / "m.csv")
    (fsd50k.parent / "eval.csv").unlink()
    with pytest.raises(
        DatasetError,
        match=r"The fsd50k layout needs eval\.csv beside dev\.csv .* \(CSV files there: "
        r"dev\.csv\)",
    ):
        open_dataset(fsd50k)


# --- multi-label targets and metrics -----------------------------------------------------------------
def test_label_targets_and_single_label_refusal(fsd50k):
    data = open_dataset(fsd50k)
    clips = sorted(data.clips, key=lambda c: c.path.stem)
    targets = label_targets(clips, ["Speech", "Dog", "Bark", "Rain"])
    assert targets.dtype == np.float32
    assert targets.tolist() == [
        [0, 1, 1, 0],
        [0, 1, 0, 0],
        [1, 0, 0, 0],
        [1, 0, 1, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],
    ]
    with pytest.raises(
        DatasetError,
        match=r"3 of 6 clips have several labels \(e\.g\. 101\.wav: \['Bark', 'Dog'\]\).*"
        r"use label_targets",
    ):
        label_indices(clips, ["Speech", "Dog", "Bark"])
    with pytest.raises(DatasetError, match=r"no class for the dataset label\(s\) \['Speech'\]"):
        label_targets(clips, ["Dog", "Bark"])


def test_multilabel_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    targets = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1]])
    logits = torch.tensor(rng.normal(size=targets.shape), dtype=torch.float32)
    logits[0, 1] = logits[1, 1]  # a tie
    ev = multilabel_metrics(logits, targets, ["a", "b", "c", "d"])
    scores = torch.sigmoid(logits).numpy()
    per = ev.per_class.set_index("label")
    for k, name in enumerate("ab"):
        assert per.loc[name, "ap"] == pytest.approx(average_precision_score(targets[:, k], scores[:, k]))
        assert per.loc[name, "auc"] == pytest.approx(roc_auc_score(targets[:, k], scores[:, k]))
    assert np.isnan(per.loc["c", "ap"]) and np.isnan(per.loc["c", "auc"])  # no positive
    assert per.loc["d", "ap"] == 1.0 and np.isnan(per.loc["d", "auc"])  # no negative: AP defined, AUC not
    assert ev.mean_average_precision == pytest.approx(
        np.mean([average_precision_score(targets[:, k], scores[:, k]) for k in (0, 1, 3)])
    )
    assert ev.summary["mAUC"][0] == pytest.approx(
        roc_auc_score(targets[:, :2], scores[:, :2], average="macro")
    )
    expected_loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor(targets).float()
    )
    assert ev.summary["loss"][0] == pytest.approx(expected_loss.item(), rel=1e-6)
    assert ev.predictions["labels"].tolist()[:2] == ["a | d", "b | d"]


def test_auc_by_hand():
    # positives scored .9 and .7, the negative .8: one of the two pairs is ranked right -> AUC 0.5
    logits = torch.logit(torch.tensor([[0.9], [0.8], [0.7]]))
    ev = multilabel_metrics(logits, np.array([[1], [0], [1]]), ["a"])
    assert ev.per_class["auc"][0] == pytest.approx(0.5)
    assert ev.per_class["ap"][0] == pytest.approx((1 + 2 / 3) / 2)


def test_multilabel_dataset_scores_and_evaluates_with_bce(fsd50k, tiny_model_dir):
    from prunekit.models import load_model

    model, extractor, _ = load_model(tiny_model_dir)
    data = open_dataset(fsd50k)
    labels = ["Bark", "Dog", "Speech"]  # the tiny model's three outputs, read as these tags
    scoring = scoring_data(data, ASTFeatureExtractor(num_mel_bins=16, max_length=24), labels, "train")
    assert scoring.multilabel and scoring.targets.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    ev = evaluate(model, extractor, labels, data, "test")
    assert ev.summary["clips"][0] == 2
    assert ev.per_class.set_index("label")["positives"].tolist() == [1, 1, 1]
    assert 0 <= ev.mean_average_precision <= 1


# --- the command line --------------------------------------------------------------------------------
def test_cli_evaluates_an_esc50_layout(esc50, tiny_model_dir, run_main, tmp_path):
    from prunekit.models import load_model

    out = run_main(
        "evaluate",
        "--model",
        tiny_model_dir,
        "--data",
        esc50,
        "--preset",
        "esc50",
        "--repeats",
        "1",
        cache=tmp_path / "cache",
    )
    assert out.returncode == 0, out.stderr
    assert "ESC-50 (esc50.csv) [test], 3 clips" in out.stdout
    expected = evaluate(*load_model(tiny_model_dir), open_dataset(esc50), "test").accuracy
    assert float(re.search(r"accuracy (\S+)", out.stdout).group(1)) == pytest.approx(expected, abs=5e-5)
    bad = run_main(
        "evaluate", "--model", tiny_model_dir, "--data", esc50, "--preset", "esc51", cache=tmp_path / "cache"
    )
    assert bad.returncode == 2 and "Unknown manifest preset 'esc51'" in bad.stderr


def test_cli_reports_map_on_a_multilabel_manifest(tmp_path, write_tone, tiny_model_dir, run_main):
    from prunekit.models import load_model

    rows = [
        ("a.wav", "down,go", "train"),
        ("b.wav", "up", "validation"),
        ("c.wav", "go,up", "test"),
        ("d.wav", "down", "test"),
        ("e.wav", "up,down", "test"),
    ]
    for i, (f, _, _) in enumerate(rows):
        write_tone(tmp_path / "tags" / f, 300 + 90 * i, seed=i)
    (tmp_path / "tags" / "tags.csv").write_text(
        "file,labels,split\n" + "".join(f'{f},"{lab}",{s}\n' for f, lab, s in rows)
    )
    out = run_main(
        "evaluate",
        "--model",
        tiny_model_dir,
        "--data",
        tmp_path / "tags" / "tags.csv",
        "--repeats",
        "1",
        cache=tmp_path / "cache",
    )
    assert out.returncode == 0, out.stderr
    ev = evaluate(*load_model(tiny_model_dir), open_dataset(tmp_path / "tags" / "tags.csv"), "test")
    printed = re.search(r"mAP (\S+)   mAUC (\S+)", out.stdout)
    assert float(printed.group(1)) == pytest.approx(ev.mean_average_precision, abs=5e-5)
    assert float(printed.group(2)) == pytest.approx(ev.summary["mAUC"][0], abs=5e-5)
    assert "accuracy" not in out.stdout and "lowest per-class AP" in out.stdout


def test_single_label_paths_refuse_multilabel_data(fsd50k, tiny_model_dir):
    from prunekit.evaluation.metrics import classification_metrics
    from prunekit.heads.pipeline import prune_and_evaluate
    from prunekit.heads.planner import plan_from_heads
    from prunekit.models import load_model

    with pytest.raises(ConfigurationError, match=r"class indices \(N,\), got targets of shape \(2, 3\)"):
        classification_metrics(torch.zeros(2, 3), np.zeros((2, 3)), ["a", "b", "c"])
    model, extractor, _ = load_model(tiny_model_dir)
    plan = plan_from_heads(model, {0: [0, 1], 1: [0, 1, 2, 3]})
    # Pruning multi-label data is evaluated by mAP (tests/test_multilabel.py goes end to end).
    variant = prune_and_evaluate(
        model, extractor, ["Bark", "Dog", "Speech"], plan, open_dataset(fsd50k), "test", repeats=1
    )
    assert variant.evaluation.multilabel and variant.evaluation.metric == "mAP"


# --- the app -------------------------------------------------------------------------------------------
def _overview(**state):
    from conftest import REPO
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    layouts = at.selectbox(key="data_preset").options  # the sidebar runs in app.py, not on the page alone
    at.switch_page("pages/overview.py").run()
    assert not at.exception, at.exception
    return at, layouts


def test_app_reads_a_manifest_with_a_preset(esc50):
    at, layouts = _overview(data_kind="CSV manifest", data_ref=str(esc50), data_preset="esc50")
    assert not at.error, [e.value for e in at.error]
    assert any(m.label == "Accuracy on the test split of ESC-50 (esc50.csv)" for m in at.metric)
    assert layouts == ["detect from header", "esc50", "urbansound8k", "fsd50k", "audioset"]


def test_app_says_which_tags_of_a_multilabel_manifest_the_model_lacks(fsd50k, tiny_model_dir):
    at, _ = _overview(
        model_kind="Local folder",
        model_ref=str(tiny_model_dir),
        data_kind="CSV manifest",
        data_ref=str(fsd50k),
        data_preset="detect from header",
    )
    # The tiny model's classes are down, go, up: FSD50K's tags are not among them, said plainly
    # (a tagger whose classes fit is shown with its mAP: tests/test_multilabel.py).
    assert any("The model has no class for the dataset label(s)" in e.value for e in at.error)
    assert not any(m.label.startswith(("Accuracy", "mAP")) for m in at.metric)
