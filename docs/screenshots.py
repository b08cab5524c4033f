"""Re-make the README's screenshots: the browser test saves one PNG per page into docs/.

.venv/bin/python docs/screenshots.py        # needs chromium (scripts/ensure-chromium)
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    env = {**os.environ, "PRUNEKIT_SCREENSHOTS": str(REPO / "docs")}
    sys.exit(
        subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "tests/test_e2e.py",
                "tests/test_tokens_e2e.py",
                "tests/test_keys_e2e.py",
            ],
            cwd=REPO,
            env=env,
        )
    )
