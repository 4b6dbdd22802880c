"""Entry point: search self-KD hyperparameters (see README.md and `--help`)."""

import sys

from skd_ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
