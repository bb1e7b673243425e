"""What a researcher reads in the MLflow UI about a sweep: run names, the parent run's parameters and
note, and the URL of the runs view.

The UI itself is MLflow's; this module only decides what the project writes into it. MLflow calls go
through orchestrator.tracking.
"""

from __future__ import annotations

import shlex

from orchestrator import tracking
from orchestrator.grid import TrialGrid, Variant
from workers.vocabulary import Tag

# Short names for the values a trial varies, in its run name (others keep their config key).
SHORT_KEYS = {
    "learning_rate": "lr",
    "english_fraction": "en",
    "weight_decay": "wd",
    "batch_size": "bs",
    "head_dropout": "drop",
    "lora_rank": "lora",
}
RUNS_VIEW = "#/experiments/{experiment_id}/runs?workflowType=machine_learning"  # MLflow 3: Training runs
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


# ---------------------------------------------------------------- names


def short_value(value) -> str:
    """A compact number (0.002 -> 2e-3, 0.5 -> 0.5, 3 -> 3) or the value as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{value:g}"


def variant_label(variant: Variant, tuned: tuple[str, ...] | list[str]) -> str:
    """What sets a trial apart, for its run name: the tuned values (numbers as `lr=2e-3`, names bare
    as `full`), then its scenario and fold."""
    parts = []
    for key in tuned:
        if key not in variant.values:
            continue
        value = variant.values[key]
        if isinstance(value, str):
            parts.append(value)
        else:
            parts.append(f"{SHORT_KEYS.get(key, key)}={short_value(value)}")
    parts.append(variant.scenario)
    if variant.fold:
        parts.append(f"fold {variant.fold}")
    return " ".join(p for p in parts if p)


# ---------------------------------------------------------------- the parent run


def search_space(spec) -> dict:
    """The sweep's Tune domains: sweep-wide ones by key, a scenario's own as `<scenario>.<key>`."""
    space = dict(spec.space)
    for scenario in spec.all_scenarios():
        space.update({f"{scenario.name}.{key}": domain for key, domain in scenario.space.items()})
    return space


def sweep_params(grid: TrialGrid, space: dict) -> dict[str, str]:
    """The parent run's parameters: every value all trials share (under its config key, so parent and
    trial columns line up), and the search space as `search_space.<key>` (the Tune domain in words)."""
    variants = [v for phase in grid.phases for v in phase.variants]
    params: dict[str, str] = {}
    if variants:
        keys = set(variants[0].values).intersection(*(v.values for v in variants[1:]))
        for key in sorted(keys):
            values = {repr(v.values[key]) for v in variants}
            if len(values) == 1:
                params[key] = _text(variants[0].values[key])
    for key, domain in sorted(space.items()):
        params[f"search_space.{key}"] = describe_domain(domain)
    if grid.folds:
        params["search_space.folds"] = grid.folds
    return {k: v[:MAX_PARAM_CHARS] for k, v in params.items()}


def describe_domain(domain) -> str:
    """A Tune search domain in words: grid_search([...]), loguniform(1e-05, 0.001), choice([...])."""
    if isinstance(domain, dict) and "grid_search" in domain:
        return f"grid_search({list(domain['grid_search'])})"
    categories = getattr(domain, "categories", None)
    if categories is not None:
        return f"choice({list(categories)})"
    lower, upper = getattr(domain, "lower", None), getattr(domain, "upper", None)
    if lower is not None and upper is not None:
        sampler = type(getattr(domain, "sampler", None)).__name__.lower().replace("_", "")
        kind = "loguniform" if "log" in sampler else "randint" if isinstance(lower, int) else "uniform"
        return f"{kind}({lower}, {upper})"
    return _text(domain)


def log_sweep_start(client, parent_run_id: str, grid: TrialGrid, spec, command: list[str]) -> None:
    """At the sweep's start: its fixed values and search space as the parent's parameters, and a first note."""
    tracking.log_params(client, parent_run_id, sweep_params(grid, search_space(spec)))
    note = f"Sweep `{grid.sweep}`: {grid.num_trials} trials, {grid.plan}. Running.\n\n    {reproduce(command)}\n"
    tracking.set_tags(client, parent_run_id, {Tag.NOTE: note})


def reproduce(command: list[str], commit: str = "") -> str:
    """The command that runs the sweep again, as a module (the driver's argv[0] is a file path)."""
    line = shlex.join(["python", "-m", "orchestrator.sweep", *command[1:]])
    return f"git checkout {commit} && {line}" if commit and commit != "unknown" else line


def parent_note(results, table: str, command: list[str], commit: str) -> str:
    """The parent run's description: its trials best first (each linked to its run) and how to run it again."""
    metric = results.metric
    lines = [
        f"Sweep `{results.name}`: {len(results.trials)} trials, best first by `{metric}` "
        "(validation clips of the training speakers; the test sets are held-out speakers).",
        "",
        f"| run | status | {metric} | " + " | ".join(f"{s}/accuracy" for s in _test_sets(results)) + " |",
        "|---|---|---|" + "---|" * len(_test_sets(results)),
    ]
    for trial in results.ranked():
        link = f"[{trial.name or trial.trial_id}](#/experiments/{results.experiment_id}/runs/{trial.run_id})"
        cells = [link, trial.status, _num(trial.metric(metric))]
        cells += [_num(trial.metric(f"{s}/accuracy")) for s in _test_sets(results)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Reproduce it:", "", f"    {reproduce(command, commit)}", "", "As the console printed it:", ""]
    lines += [f"    {line}" for line in table.splitlines()]
    return "\n".join(lines)


def note_sweep_end(client, record, results, table: str) -> None:
    tracking.set_tags(
        client, record.parent_run_id, {Tag.NOTE: parent_note(results, table, record.command, record.git_commit)}
    )


# ---------------------------------------------------------------- where to look


def runs_view_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/{RUNS_VIEW.format(experiment_id=experiment_id)}"


def ui_lines(tracking_uri: str, experiment_id: str) -> list[str]:
    """The sweep's closing lines: how to open its runs in the MLflow UI, straight on the runs view."""
    if tracking_uri.startswith(("http://", "https://")):
        return ["Open the runs in the MLflow UI:", f"    {runs_view_url(tracking_uri, experiment_id)}"]
    if tracking_uri.startswith("sqlite"):
        return [
            "Open the runs in the MLflow UI:",
            f"    mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000",
            f"    then {runs_view_url(UI_ADDRESS, experiment_id)}",
        ]
    return ["Open the runs in the MLflow UI:", f"    {tracking_uri} (experiment {experiment_id})"]


def _test_sets(results) -> list[str]:
    return sorted({s for trial in results.trials for s in trial.test_sets})


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _text(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)
