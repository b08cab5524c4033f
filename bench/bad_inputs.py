"""Peak memory of reading a hostile or huge upload the way the Listen page does.

    .venv/bin/python bench/bad_inputs.py           # writes bench/results/bad_inputs.json

Each file is read by ``windows.read_recording`` (the Listen upload path: header, then at most
``MAX_SECONDS`` decoded, mixed to mono and resampled) in a fresh process, whose peak resident
set (``getrusage(RUSAGE_SELF).ru_maxrss``) is taken after the imports and again after the read.
The difference is what one upload costs. The files are generated into a temporary folder:

* a 20 KB and an 80 KB WAV whose header says 1 Hz (issue 12, row 1: 1.8-2.5 GB before);
* the largest file an upload may be (``MAX_FILE_BYTES``, 200 MB) at the highest sample rate read
  (384 kHz, 16-bit mono: 260 s, under the 5-minute cut): the worst upload that is accepted;
* 10 minutes at 16 kHz (19 MB), read for its first 5 minutes: an ordinary long recording.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "bad_inputs.json"

CHILD = """
import json, resource, sys, time
from prunekit.errors import AudioError
from prunekit.evaluation import windows
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    recording = windows.read_recording(data, name=sys.argv[1])
    outcome = f"read: {recording.seconds:.0f} s long, {len(recording.wave):,} samples at 16 kHz kept"
except AudioError as exc:
    outcome = f"AudioError: {exc}"
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_rss_mb_after_imports": before / 1024,
                  "peak_rss_mb": after / 1024, "upload_cost_mb": (after - before) / 1024}))
"""


def _wav(path: Path, sample_rate: int, frames: int, *, noise: bool = True) -> Path:
    """A 16-bit mono PCM WAV of ``frames`` frames, its header saying ``sample_rate``."""
    block = 2
    header = (
        b"RIFF"
        + (36 + frames * block).to_bytes(4, "little")
        + b"WAVE"
        + b"fmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little")
        + (sample_rate * block).to_bytes(4, "little")
        + block.to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + (frames * block).to_bytes(4, "little")
    )
    rng = np.random.default_rng(0)
    with open(path, "wb") as handle:
        handle.write(header)
        for start in range(0, frames, 1 << 22):  # in 8 MB pieces
            n = min(1 << 22, frames - start)
            samples = rng.normal(0, 3000, n) if noise else np.zeros(n)
            handle.write(samples.astype("<i2").tobytes())
    return path


def main() -> None:
    from prunekit.data.audio import MAX_FILE_BYTES

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {
            "20 KB WAV, header says 1 Hz": _wav(folder / "one_hz_20k.wav", 1, 10_000),
            "80 KB WAV, header says 1 Hz": _wav(folder / "one_hz_80k.wav", 1, 40_000),
            "200 MB WAV at 384 kHz (largest accepted upload, highest rate)": _wav(
                folder / "max_384k.wav", 384_000, (MAX_FILE_BYTES - 44) // 2
            ),
            "10 min WAV at 16 kHz (first 5 min read)": _wav(folder / "long_16k.wav", 16_000, 16_000 * 600),
        }
        for name, path in files.items():
            start = time.perf_counter()
            child = subprocess.run(
                [sys.executable, "-c", CHILD, str(path)], cwd=REPO, capture_output=True, text=True, check=True
            )
            row = {
                "file": name,
                "bytes": path.stat().st_size,
                **json.loads(child.stdout.splitlines()[-1]),
                "process_seconds": time.perf_counter() - start,
            }
            row["outcome"] = row["outcome"].replace(str(path), path.name)
            results.append(row)
            print(
                f"{name}: {row['outcome'][:90]}; peak RSS {row['peak_rss_mb']:.0f} MB "
                f"(+{row['upload_cost_mb']:.0f} MB for the upload), {row['seconds']:.2f} s"
            )
    payload = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "what": "peak RSS of windows.read_recording (the Listen upload path) per file, fresh process",
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
