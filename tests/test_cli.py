"""The CLI end to end, as a user runs it: a subprocess, real files on disk."""

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO


def run_cli(*args, cache=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cache is not None:
        env["PRUNEKIT_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "prunekit", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_evaluate_tiny_model_on_tiny_dataset(tmp_path, tiny_model_dir, tiny_speech_commands):
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
    assert report["cost"]["macs_per_clip"] > 0


def test_errors_are_messages_not_tracebacks(tmp_path, tiny_speech_commands):
    out = run_cli("evaluate", "--model", tmp_path / "nowhere", "--data", tiny_speech_commands, cache=tmp_path / "c")
    assert out.returncode == 2
    assert "error: No model folder" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("evaluate", "--model", "MIT/ast-finetuned-speech-commands-v2", "--data", tiny_speech_commands)
    assert out.returncode == 2 and "HF_HUB_OFFLINE" in out.stderr


@pytest.mark.slow
def test_demo_model_on_demo_data_offline(real_cache):
    """The issue's acceptance command: the embedded demo on held-out voices, no network."""
    out = run_cli("evaluate", "--model", "demo", "--data", "demo", "--split", "test", "--repeats", "3", cache=real_cache)
    assert out.returncode == 0, out.stderr
    accuracy = float(re.search(r"accuracy (\d\.\d{4})", out.stdout).group(1))
    assert accuracy >= 0.90, out.stdout


def test_score_and_prune_tiny_model(tmp_path, tiny_model_dir, tiny_speech_commands):
    cache = tmp_path / "c"
    out = run_cli("score", "--model", tiny_model_dir, "--scorer", "fisher", "--data", tiny_speech_commands,
                  "--out", tmp_path / "scores.csv", cache=cache)
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "scores.csv")
    assert list(table.columns) == ["layer", "group", "matrix", "head", "channel", "scorer", "score"]
    assert set(table.scorer) == {"fisher"} and (table.score > 0).all()
    assert len(list((cache / "scores").glob("*.parquet"))) == 1  # cached for the next command

    pruned = tmp_path / "pruned"
    out = run_cli("prune", "--model", tiny_model_dir, "--scorer", "fisher", "--data", tiny_speech_commands,
                  "--pattern", "entire-head", "--threshold", "local", "--sparsity", "0.5", "--out", pruned,
                  "--repeats", "2", cache=cache)
    assert out.returncode == 0, out.stderr
    assert "attention sparsity reached 50.0%" in out.stdout and "pruned / dense" in out.stdout
    assert re.search(r"paired, clip by clip: pruned is .*95 % CI .*McNemar p .*of 3\)", out.stdout), out.stdout
    assert "budgets" not in out.stdout  # entire-head: the budget does not apply
    config = json.loads((pruned / "config.json").read_text())
    assert [s["heads"] for s in config["prunekit_structure"]] == [2, 2]
    assert (pruned / "plan.json").is_file() and (pruned / "preprocessor_config.json").is_file()
    out = run_cli("evaluate", "--model", pruned, "--data", tiny_speech_commands, "--repeats", "2", cache=cache)
    assert out.returncode == 0, out.stderr

    again = run_cli("prune", "--model", tiny_model_dir, "--scorer", "magnitude", "--out", pruned, cache=cache)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    joint = run_cli("prune", "--model", tiny_model_dir, "--scorer", "magnitude", "--pattern", "per-head",
                    "--budget", "joint", "--sparsity", "0.3", "--out", tmp_path / "joint", "--repeats", "1",
                    "--data", tiny_speech_commands, cache=cache)
    assert joint.returncode == 0, joint.stderr
    assert "global threshold, joint Q/K and V/O budgets" in joint.stdout
    assert json.loads((tmp_path / "joint" / "plan.json").read_text())["budget"] == "joint"
    bad = run_cli("prune", "--model", tiny_model_dir, "--scorer", "magnitude", "--pattern", "per-head",
                  "--threshold", "local", "--sparsity", "0.99", "--out", tmp_path / "p2", cache=cache)
    assert bad.returncode == 2 and "at most" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_prune_demo_and_reload_offline(real_cache, tmp_path):
    """The pruning-core issue's acceptance commands on the embedded demo."""
    out = run_cli("prune", "--model", "demo", "--scorer", "fisher", "--pattern", "per-head", "--threshold", "global",
                  "--sparsity", "0.5", "--out", tmp_path / "pruned-demo", "--repeats", "3", cache=real_cache)
    assert out.returncode == 0, out.stderr
    reached = float(re.search(r"attention sparsity reached (\d+\.\d)%", out.stdout).group(1))
    assert abs(reached - 50.0) < 2.0
    out = run_cli("evaluate", "--model", tmp_path / "pruned-demo", "--data", "demo", "--repeats", "3", cache=real_cache)
    assert out.returncode == 0, out.stderr
    assert float(re.search(r"accuracy (\d\.\d{4})", out.stdout).group(1)) > 0.3  # pruned, unrecovered, not broken
