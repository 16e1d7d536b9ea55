"""`python -m adkit` (and `torchrun ... -m adkit train ...`): the `adkit` command."""

import sys

from .cli import main

sys.exit(main())
