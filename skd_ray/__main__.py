"""`python -m skd_ray` runs the command line."""

import sys

from skd_ray.cli import main

sys.exit(main())
