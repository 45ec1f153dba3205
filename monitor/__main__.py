"""``python -m monitor`` is ``integration-monitor``."""

import sys

from monitor.cli import main

sys.exit(main())
