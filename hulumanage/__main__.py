"""``python -m hulumanage``."""

import sys

from hulumanage.cli import main

sys.exit(main())
