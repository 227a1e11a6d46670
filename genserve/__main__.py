from __future__ import annotations

import sys

from genserve.cli import main

sys.exit(main())
