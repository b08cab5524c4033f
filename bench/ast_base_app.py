"""Every app page on an AST-base-shaped model (issue 15, item 3), timed; results in
bench/results/ast_base_app.json.

    .venv/bin/python bench/ast_base_app.py            # about 15 min on 2 cores
    BENCH_THREADS=1 .venv/bin/python bench/ast_base_app.py

``ast_base_app_batch32.json`` is the first run, from before the app stopped timing batch 32 on
a CPU for models this size (prunekit.evaluation.cost.LARGE_BATCH_MACS): its Applies include
three interleaved rounds at batch 32 (10.6 s a pass).

The model is bench/ast_base.py's folder (12 layers x 12 heads x 768, 128 mel bins x 128 frames,
35 words, random weights: timings and memory only, never accuracy), loaded as a local folder;
the dataset is the synthetic demo set read through the model's own feature extractor. The
sidebar asks for 200 clips for the gradient scorers and 200 clips to evaluate, as a user of a
CPU would. The pages run through AppTest (the page scripts end to end, in this process), so
the memory figures are this process's:

1. Overview: the model's facts, then the original's evaluation on 200 test clips.
2. Head importance with Fisher on 200 validation clips (empty score cache, features cached).
3. The Prune preview: median of 10 slider moves with the scores cached (target 0.5 s).
4. Apply at 50 %: surgery, evaluation of the 200 clips, interleaved latency (the page's own).
5. Listen: one clip, the original's and the variant's top 5.
6. Five Applies in one session (at most 3 variants in memory, the rest written to the session
   folder): peak and final resident memory.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from memory import memory_mb, reset_peak  # bench/memory.py

from app import app_test, timed  # bench/app.py, beside this script

REPO = Path(__file__).resolve().parent.parent
CLIPS = 200


def _app(folder: Path, page: str | None = None, **state):
    sidebar = {
        "model_kind": "Local folder",
        "model_ref": str(folder),
        "score_clips": CLIPS,
        "eval_clips": CLIPS,
    }
    return app_test(page, timeout=3600, **{**sidebar, **state})


def _timed(run) -> float:
    return round(timed(run), 2)


def _check(at) -> None:
    if at.exception or at.error:
        raise RuntimeError(
            f"The page failed: {[e.value for e in at.exception]} {[e.value for e in at.error]}"
        )


def main() -> None:
    from ast_base import write_folder  # bench/ast_base.py, beside this script

    threads = int(os.environ.get("BENCH_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": threads,
        "load_average_at_start": os.getloadavg(),
        "clips": CLIPS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        demo = REPO / "cache" / "synthetic-speech-commands-v2-seed0"
        if demo.is_dir():  # the demo set is not what is timed: link the generated one
            (cache / demo.name).symlink_to(demo)
        os.environ["PRUNEKIT_CACHE"] = tmp
        folder = write_folder(cache / "ast-base")

        at = _app(folder)
        results["overview_s"] = _timed(at.run)  # facts, MACs and the original on 200 test clips
        _check(at)
        results["overview_metrics"] = {m.label: m.value for m in at.metric}

        at = _app(folder, "importance", imp_scorer="fisher")
        results["fisher_200_clips_s"] = _timed(at.run)
        _check(at)

        at = _app(folder, "prune", prune_scorer="fisher")
        at.run()
        _check(at)
        values = [0.05 * k for k in (4, 6, 8, 10, 12, 14, 8, 6, 4, 10)]
        slider = [_timed(lambda v=v: at.slider(key="prune_sparsity").set_value(v).run()) for v in values]
        results["prune_preview_median_s"] = statistics.median(slider)
        results["prune_preview_max_s"] = max(slider)

        results["apply_50_s"] = _timed(lambda: at.button(key="prune_apply").click().run())
        _check(at)
        results["apply_metrics"] = {m.label: m.value for m in at.metric}

        at.switch_page("pages/listen.py")
        results["listen_s"] = _timed(at.run)
        _check(at)

        at.switch_page("pages/prune.py")
        at.run()
        reset_peak()
        applies = []
        for sparsity in (0.3, 0.4, 0.6, 0.7):  # with the first: five variants in the session
            at.slider(key="prune_sparsity").set_value(sparsity).run()
            applies.append(_timed(lambda: at.button(key="prune_apply").click().run()))
            _check(at)
        results["four_more_applies_s"] = applies
        results["memory_after_five_variants_mb"] = memory_mb()
        results["variants_in_memory"] = len(at.session_state["_prunekit_models"])
        results["variants_on_disk"] = sorted(
            p.name for p in (cache / "sessions").glob("*/variant-*") if p.is_dir()
        )
    results["load_average_at_end"] = os.getloadavg()
    out = REPO / "bench" / "results" / "ast_base_app.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
