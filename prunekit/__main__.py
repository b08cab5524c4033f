"""``python -m prunekit``: the command line (see ``prunekit.cli``)."""

import sys

from prunekit.cli import main

if __name__ == "__main__":
    sys.exit(main())
