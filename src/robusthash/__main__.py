"""``python -m robusthash`` (and ``torchrun --nproc-per-node N -m robusthash``): the command line."""

import sys

from robusthash.app.cli import main

sys.exit(main())
