"""``python -m pacnp``: the same command line as the ``pacnp`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
