"""The CLI end to end, as a user runs it: a subprocess, real files on disk."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import REPO


def test_evaluate_tiny_model_on_tiny_dataset(tmp_path, tiny_model_dir, tiny_speech_commands, run_cli):
    out = run_cli(
        "evaluate", "--model", tiny_model_dir, "--data", tiny_speech_commands, "--split", "test",
        "--repeats", "2", "--csv", tmp_path / "pred.csv", "--json", tmp_path / "report.json", cache=tmp_path / "c",
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"accuracy \d\.\d{4}", out.stdout)
    assert "MACs/clip" in out.stdout
    predictions = pd.read_csv(tmp_path / "pred.csv")
    assert len(predictions) == 3 and set(predictions["label"]) == {"down", "go", "up"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["clips"] == 3
    assert report["summary"]["accuracy"] == pytest.approx(predictions["correct"].mean())
    from prunekit.evaluation.cost import count_macs
    from prunekit.models import load_model

    assert report["cost"]["macs_per_clip"] == count_macs(load_model(tiny_model_dir).model)


def test_errors_are_messages_not_tracebacks(tmp_path, tiny_speech_commands, run_cli):
    out = run_cli("evaluate", "--model", tmp_path / "nowhere", "--data", tiny_speech_commands, cache=tmp_path / "c")
    assert out.returncode == 2
    assert "error: No model folder" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("evaluate", "--model", "MIT/ast-finetuned-speech-commands-v2", "--data", tiny_speech_commands)
    assert out.returncode == 2 and "HF_HUB_OFFLINE" in out.stderr


@pytest.mark.slow
def test_demo_model_on_demo_data_offline(real_cache, run_cli):
    """The issue's acceptance command: the embedded demo on held-out voices, no network."""
    out = run_cli("evaluate", "--model", "demo", "--data", "demo", "--split", "test", "--repeats", "3", cache=real_cache)
    assert out.returncode == 0, out.stderr
    accuracy = float(re.search(r"accuracy (\d\.\d{4})", out.stdout).group(1))
    recorded = json.loads((REPO / "prunekit" / "demo_model" / "training.json").read_text())["test_accuracy"]
    assert accuracy == round(recorded, 4), out.stdout  # what demo-train measured on the same clips


def test_score_and_prune_tiny_model(tmp_path, tiny_model_dir, tiny_speech_commands, monkeypatch, capsys):
    """The commands in-process (``cli.main``: the code ``python -m prunekit`` runs; the subprocess
    path is covered above and by the slow demo tests), checked against the library's own numbers."""
    from prunekit.cli import main
    from prunekit.data.datasets import open_dataset
    from prunekit.evaluation.metrics import evaluate
    from prunekit.heads.scoring import score_split
    from prunekit.models import load_model

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "c"))
    assert main(["score", "--model", str(tiny_model_dir), "--scorer", "fisher", "--data", str(tiny_speech_commands),
                 "--out", str(tmp_path / "scores.csv")]) == 0
    table = pd.read_csv(tmp_path / "scores.csv")
    loaded, data = load_model(tiny_model_dir), open_dataset(tiny_speech_commands)
    library = score_split(*loaded, "fisher", data).frame
    assert list(table.columns) == list(library.columns)
    np.testing.assert_allclose(table["score"], library["score"], rtol=1e-6)
    assert len(list((tmp_path / "c" / "scores").glob("*.parquet"))) == 1  # cached for the next command

    pruned = tmp_path / "pruned"
    args = ["prune", "--model", str(tiny_model_dir), "--scorer", "fisher", "--data", str(tiny_speech_commands),
            "--pattern", "entire-head", "--threshold", "local", "--sparsity", "0.5", "--out", str(pruned),
            "--repeats", "2"]
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "attention sparsity reached 50.0%" in printed and "pruned / dense" in printed
    assert re.search(r"paired, clip by clip: pruned is .*95 % CI .*McNemar p .*of 3\)", printed), printed
    assert "budgets" not in printed  # entire-head: the budget does not apply
    config = json.loads((pruned / "config.json").read_text())
    assert [s["heads"] for s in config["prunekit_structure"]] == [2, 2]
    assert (pruned / "plan.json").is_file() and (pruned / "preprocessor_config.json").is_file()
    reloaded = load_model(pruned)
    accuracy = evaluate(*reloaded, data, "test").accuracy
    row = re.search(r"^accuracy\s+(\S+)\s+(\S+)", printed, flags=re.M)
    assert (float(row.group(1)), float(row.group(2))) == pytest.approx(
        (evaluate(*loaded, data, "test").accuracy, accuracy), abs=5e-5)  # dense, pruned (4 digits)

    assert main(["prune", "--model", str(tiny_model_dir), "--scorer", "magnitude", "--out", str(pruned)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    joint = ["prune", "--model", str(tiny_model_dir), "--scorer", "magnitude", "--pattern", "per-head",
             "--budget", "joint", "--sparsity", "0.3", "--out", str(tmp_path / "joint"), "--repeats", "1",
             "--data", str(tiny_speech_commands)]
    assert main(joint) == 0
    assert "global threshold, joint Q/K and V/O budgets" in capsys.readouterr().out
    assert json.loads((tmp_path / "joint" / "plan.json").read_text())["budget"] == "joint"
    forced = ["prune", "--model", str(tiny_model_dir), "--scorer", "magnitude", "--pattern", "entire-head",
              "--sparsity", "0.25", "--force-remove", "0:1,1:3", "--out", str(tmp_path / "forced"), "--repeats", "1",
              "--data", str(tiny_speech_commands)]
    assert main(forced) == 0
    saved = json.loads((tmp_path / "forced" / "plan.json").read_text())
    assert saved["force_remove"] == [[0, 1], [1, 3]] and saved["layers"][0]["heads"] == [0, 2, 3]
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse: a malformed pair is refused before anything runs
        main([*forced[:-4], "--force-remove", "0-1"])
    assert "expected LAYER:HEAD pairs such as 0:1,3:2, got '0-1'" in capsys.readouterr().err
    bad = ["prune", "--model", str(tiny_model_dir), "--scorer", "magnitude", "--pattern", "per-head",
           "--threshold", "local", "--sparsity", "0.99", "--out", str(tmp_path / "p2")]
    assert main(bad) == 2
    assert "can remove at most 87.50%" in capsys.readouterr().err  # each head keeps 1 of 8 channels


@pytest.mark.slow
def test_prune_demo_and_reload_offline(real_cache, tmp_path, run_cli):
    """The pruning-core issue's acceptance commands on the embedded demo."""
    out = run_cli("prune", "--model", "demo", "--scorer", "fisher", "--pattern", "per-head", "--threshold", "global",
                  "--sparsity", "0.5", "--out", tmp_path / "pruned-demo", "--repeats", "3", cache=real_cache)
    assert out.returncode == 0, out.stderr
    reached = float(re.search(r"attention sparsity reached (\d+\.\d)%", out.stdout).group(1))
    assert abs(reached - 50.0) < 2.0
    out = run_cli("evaluate", "--model", tmp_path / "pruned-demo", "--data", "demo", "--repeats", "3", cache=real_cache)
    assert out.returncode == 0, out.stderr
    from prunekit.data.datasets import demo_dataset
    from prunekit.evaluation.metrics import evaluate
    from prunekit.models import load_model

    printed = float(re.search(r"accuracy (\d\.\d{4})", out.stdout).group(1))
    assert printed == round(evaluate(*load_model(tmp_path / "pruned-demo"), demo_dataset(), "test").accuracy, 4)
