"""`python -m orchestrator.report ...`: see orchestrator.report."""

import sys

from orchestrator.report.cli import main

sys.exit(main())
