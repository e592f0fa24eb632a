"""python -m lightloop."""

import sys

from lightloop.cli import main

sys.exit(main())
