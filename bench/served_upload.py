"""Peak memory of the worst upload a served app accepts (issue 12, item 2: a lower upload limit).

    .venv/bin/python bench/served_upload.py     # writes bench/results/served_upload.json; about 2 min

The same measurement as bench/bad_inputs.py (``windows.read_recording``, the Listen upload path,
in a fresh process; peak RSS after the imports and after the read) for the largest upload at the
highest sample rate read (384 kHz, 16-bit mono), at served mode's limit (``served.UPLOAD_MB``,
20 MB) and at Streamlit's default limit (200 MB), alternated, twice each.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bad_inputs import CHILD, _wav

from prunekit.ui.served import UPLOAD_MB

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "served_upload.json"


def main() -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            f"{mb} MB WAV at 384 kHz": _wav(Path(tmp) / f"max_{mb}.wav", 384_000, (mb * 2**20 - 44) // 2)
            for mb in (UPLOAD_MB, 200)
        }
        for repeat in range(2):
            for name, path in files.items():
                start = time.perf_counter()
                child = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path)],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = {"file": name, "repeat": repeat, "bytes": path.stat().st_size}
                row |= json.loads(child.stdout.splitlines()[-1])
                row["process_seconds"] = time.perf_counter() - start
                results.append(row)
                print(f"{name}: peak RSS {row['peak_rss_mb']:.0f} MB (+{row['upload_cost_mb']:.0f} MB)")
    OUT.write_text(
        json.dumps(
            {
                "machine": {"platform": platform.platform(), "python": platform.python_version()},
                "what": "peak RSS of windows.read_recording per file, fresh process",
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
