"""The sweep report: the paper's tables and plots for one sweep, read back from its MLflow runs.

    python -m orchestrator.report smoke                    # the latest smoke sweep in ./mlruns
    python -m orchestrator.report <parent-run-id> --out reports/transfer
    python -m orchestrator.report features text smoke      # several sweeps on the same data, side by side

Writes report.md (images beside it, under images/) and report.html (one self-contained file) and
logs them to the sweep's parent run as artifacts under report/. With several sweeps it writes the
comparison (each sweep's best configuration on every held-out set; refused when their data differ)
and logs nothing: it belongs to no one sweep.

What the report shows follows what the sweep declared at its start (`declaration`: its scenarios in
order, its mixing knob), never the sweep's name. One module per section, in report order:
`overview`, `best`, `encoders`, `transfer`, `folds`, `details`, `knobs`, `trials` (assembled by
`contents`), `comparison` for several sweeps; `plots` draws every figure, `cells` formats numbers,
`cli` is the command line.
"""

from orchestrator.report.cli import ARTIFACT_DIR, build_parser, log_report, main, parse_args, write_report
from orchestrator.report.contents import build_report
from orchestrator.report.declaration import Declaration
from orchestrator.report.details import paper_table
from orchestrator.report.knobs import NOT_KNOBS, tuned_knobs

__all__ = [
    "ARTIFACT_DIR",
    "NOT_KNOBS",
    "Declaration",
    "build_parser",
    "build_report",
    "log_report",
    "main",
    "paper_table",
    "parse_args",
    "tuned_knobs",
    "write_report",
]
