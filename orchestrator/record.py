"""The sweep record: what `--resume` needs, stored beside the Tune experiments as `<sweep dir>/sweep.json`.

    <storage>/<sweep>-<YYYYmmdd-HHMMSS>-<parent run id[:8]>/
        sweep.json      the record: the trial grid, the MLflow parent run, resources, the base model
        pretrain/       Tune experiment of the pretrain phase (transfer_zh's English base)
        main/           Tune experiment of every other trial
Local directories and cloud URIs (s3://, gs://) both work: storage goes through pyarrow.fs,
as Tune's does.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import pyarrow.fs

RECORD_FILE = "sweep.json"


@dataclass(frozen=True)
class Resources:
    """How trials are placed and scheduled (the driver's resource flags)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1  # >1: a Ray Train TorchTrainer per trial; cpus/gpus are then per worker
    max_concurrent: int | None = None
    scheduler: str = "fifo"  # fifo | asha | pbt (orchestrator/schedulers.py)
    pbt_mutable: tuple[str, ...] = ("learning_rate",)  # pbt: the config keys it perturbs
    perturbation_interval: int = 1  # pbt: epochs between a trial's exploit/explore decisions
    max_failures: int = 2
    reuse_actors: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> Resources:
        return cls(**values)

    @classmethod
    def merged(cls, given: dict, stored: dict | None = None) -> dict:
        """The values `given` now (None: a flag left out), over the `stored` ones (resume), over the defaults."""
        resources = {**asdict(cls()), **(stored or {})}
        resources.update({k: v for k, v in given.items() if k in resources and v is not None})
        if resources["workers_per_trial"] < 1:
            raise ValueError("--workers-per-trial must be >= 1")
        if resources["cpus_per_trial"] <= 0 or resources["gpus_per_trial"] < 0:
            raise ValueError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        return resources


@dataclass
class SweepRecord:
    """One sweep's record: where it lives, what it runs, how far it got. Saved when one of these changes."""

    directory: str  # the sweep directory (path or URI)
    sweep: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    data_dir: str
    data_hash: str
    grid: dict  # orchestrator.grid.TrialGrid.to_dict()
    resources: dict  # cpus/gpus/workers per trial, max_concurrent, scheduler, max_failures, reuse_actors
    command: list[str] = field(default_factory=list)
    git_commit: str = ""
    base_model: str = ""  # the pretrain phase's model (init_from of the main phase)
    phases_done: list[str] = field(default_factory=list)
    status: str = "running"  # running | interrupted | finished | failed
    created: float = field(default_factory=time.time)

    def save(self) -> None:
        fs, path = pyarrow.fs.FileSystem.from_uri(_uri(self.directory))
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/{RECORD_FILE}") as out:
            out.write(json.dumps(asdict(self), indent=1, default=str).encode())

    @classmethod
    def load(cls, directory: str) -> SweepRecord:
        """The record in `directory`, given in any form `sweep_location` takes; FileNotFoundError (one line)
        when it holds none or cannot be read."""
        location = sweep_location(directory)
        try:
            fs, path = pyarrow.fs.FileSystem.from_uri(location)
            with fs.open_input_stream(f"{path}/{RECORD_FILE}") as stream:
                values = json.loads(stream.read())
        except FileNotFoundError:
            raise FileNotFoundError(f"{directory} holds no {RECORD_FILE}; is it a sweep directory?") from None
        except (OSError, ValueError, pyarrow.ArrowException) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise FileNotFoundError(f"cannot read the sweep record in {directory}: {first}") from None
        values["directory"] = location  # the directory may have moved; Tune wants it absolute
        return cls(**values)

    def phase_path(self, phase: str) -> str:
        return f"{self.directory.rstrip('/')}/{phase}"


def sweep_dir_name(sweep: str, parent_run_id: str) -> str:
    return f"{sweep}-{time.strftime('%Y%m%d-%H%M%S')}-{parent_run_id[:8]}"


def latest_sweep_dir(storage: str, sweep: str) -> str | None:
    """The newest sweep directory of `sweep` under `storage` (None: there is none)."""
    fs, root = pyarrow.fs.FileSystem.from_uri(_uri(storage))
    try:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return None
    candidates = sorted(
        e.base_name for e in entries if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith(f"{sweep}-")
    )
    for name in reversed(candidates):
        if fs.get_file_info(f"{root}/{name}/{RECORD_FILE}").type == pyarrow.fs.FileType.File:
            return f"{storage.rstrip('/')}/{name}"
    return None


def sweep_location(location: str) -> str:
    """A sweep directory as a user may give it (relative, `~`, `file://`, a trailing slash, its sweep.json or
    one of its phase directories) as the absolute path or URI that pyarrow and Tune open."""
    from pathlib import Path

    if "://" in location and not location.startswith("file://"):
        location = location.rstrip("/")
        return location.removesuffix(f"/{RECORD_FILE}")
    path = Path(location.removeprefix("file://")).expanduser().resolve()
    if path.name == RECORD_FILE:
        return str(path.parent)
    if not (path / RECORD_FILE).exists() and (path.parent / RECORD_FILE).exists():
        return str(path.parent)  # a phase directory (main/, pretrain/)
    return str(path)


def _uri(location: str) -> str:
    """pyarrow wants absolute local paths or URIs."""
    if "://" in location:
        return location
    from pathlib import Path

    return str(Path(location).resolve())
