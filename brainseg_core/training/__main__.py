"""``python -m brainseg_core.training``, also under ``torchrun ... -m``: the ``brainseg-train`` command."""

import sys

from brainseg_core.cli.train import main

sys.exit(main())
