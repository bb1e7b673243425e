"""One sweep's report: its sections, in order, as one Document (orchestrator.document renders it)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.document import Document
from orchestrator.report.best import best_summary
from orchestrator.report.declaration import Declaration
from orchestrator.report.details import selected_details
from orchestrator.report.dimensions import dimension_section
from orchestrator.report.encoders import encoder_section
from orchestrator.report.folds import fold_section
from orchestrator.report.knobs import knob_section, tuned_knobs
from orchestrator.report.overview import overview
from orchestrator.report.transfer import transfer_section
from orchestrator.report.trials import trials_section
from orchestrator.results import SweepResults


def build_report(client, sweep: SweepResults, out_dir: Path) -> Document:
    """Every section of the sweep's report; figures are written under `out_dir`/images as they are built."""
    declaration = Declaration.of(sweep)
    document = Document(f"Sweep report: {sweep.name}")
    knobs = tuned_knobs(sweep.trials)
    chosen = sweep.best_per_scenario()
    document.add(*overview(sweep))
    document.add(*best_summary(sweep, chosen, knobs, declaration))
    document.add(*encoder_section(sweep, declaration))
    document.add(*transfer_section(sweep, declaration, out_dir))
    document.add(*fold_section(sweep, out_dir))
    document.add(*selected_details(client, sweep, chosen, knobs, out_dir, declaration))
    document.add(*dimension_section(client, sweep, chosen, out_dir, declaration))
    document.add(*knob_section(sweep, chosen, knobs, out_dir))
    document.add(*trials_section(sweep, knobs))
    return document
