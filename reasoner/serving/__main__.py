"""`python -m reasoner.serving --model ...` is `reasoner serve --model ...`."""

from __future__ import annotations

import sys

from reasoner.serving.cli import main

sys.exit(main())
