"""``python -m comfyq.cli``: the ``comfyq`` command."""

import sys

from comfyq.cli.main import main

sys.exit(main())
