"""Where an AST-base-sized session's memory goes (issue #15's 5.0 GB peak after five Applies).

One fresh process, phase by phase, on the AST-base-sized model (random weights, 1,024 frames):
the resident set after each phase and the peak during it (VmHWM, reset before each phase by
writing 5 to /proc/self/clear_refs). The phases are what an Apply does in the app: copy the model
and cut it (``apply_plan``), evaluate a batch of 32 clips and a batch of 1 (features given, as the
app caches them), and keep the variant. Writes bench/results/ast_base_memory.json.

    .venv/bin/python bench/ast_base_memory.py      # about 3 min on 2 cores, peaks near 3 GB
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import torch
from memory import memory_mb, reset_peak  # bench/memory.py, beside this script
from pruning import ast_base  # bench/pruning.py

from prunekit.heads.planner import make_plan
from prunekit.heads.scoring import score
from prunekit.heads.surgery import apply_plan

OUT = Path(__file__).resolve().parent / "results" / "ast_base_memory.json"


def _phase(report: list, name: str, work):
    gc.collect()
    reset_peak()
    before = memory_mb()["VmRSS"]
    result = work()
    gc.collect()
    after = memory_mb()
    report.append(
        {
            "phase": name,
            "rss_before_mb": before,
            "peak_mb": after["VmHWM"],
            "rss_after_mb": after["VmRSS"],
        }
    )
    row = report[-1]
    print(
        f"{name:42s} before {row['rss_before_mb']:5d} MB  peak {row['peak_mb']:5d} MB"
        f" (+{row['peak_mb'] - row['rss_before_mb']})  after {row['rss_after_mb']:5d} MB",
        flush=True,
    )
    return result


def main() -> None:
    torch.set_num_threads(2)
    report: list[dict] = []
    report_imports = memory_mb()["VmRSS"]
    model = _phase(report, "build the model", ast_base)
    scores = _phase(report, "magnitude scores", lambda: score(model, "magnitude", cache=False))
    features = torch.randn(32, 1024, 128)  # (B, frames, mels), 16 MB

    def forward(m, batch: int):
        with torch.inference_mode():
            return m(features[:batch]).logits

    _phase(report, "original: forward, batch 32", lambda: forward(model, 32))
    _phase(report, "original: forward, batch 8", lambda: forward(model, 8))
    _phase(report, "original: forward, batch 1", lambda: forward(model, 1))
    variants = []
    for k, sparsity in enumerate((0.5, 0.6, 0.7)):
        plan = make_plan(scores, "per-head", "global", sparsity)
        variant = _phase(
            report, f"variant {k + 1}: apply_plan ({sparsity:.0%})", lambda plan=plan: apply_plan(model, plan)
        )
        _phase(report, f"variant {k + 1}: forward, batch 32", lambda variant=variant: forward(variant, 32))
        variants.append(variant)
    parameters = {
        "original_mb": round(sum(p.numel() for p in model.parameters()) * 4 / 2**20),
        "variants_mb": [round(sum(p.numel() for p in v.parameters()) * 4 / 2**20) for v in variants],
    }
    OUT.write_text(
        json.dumps(
            {"rss_after_imports_mb": report_imports, "parameters": parameters, "phases": report}, indent=1
        )
        + "\n"
    )
    print(parameters)


if __name__ == "__main__":
    main()
