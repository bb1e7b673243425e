"""Faults injected into real sweeps on the demo corpus: what the user is left with after each.

    python -m bench faults                          # every case, a few minutes each on 2 CPU cores
    python -m bench faults --cases corrupt interrupt

Each case runs `python -m orchestrator.sweep smoke` as a subprocess in its own session (as a terminal
runs a foreground job), on a small demo corpus (6 clips per speaker and emotion), one trial at a time:
- interrupt: SIGINT to the driver's process group after the first epoch line (Ctrl-C), then `--resume`;
- kill-driver: SIGKILL to the driver alone after its first finished trial (its Ray stays), then `--resume`;
- kill-worker: SIGKILL to the running trial's worker process after the first epoch line (Tune retries it);
- corrupt: 256 bytes XORed in the middle of one shard of a copied corpus (the sweep must refuse it).
Per case it prints each driver's exit code, the MLflow runs per trial (must be 1) with their statuses
and attempts, and what was left running: processes of the driver's session still alive after it exited
(those are then stopped, by pid, so the next case starts clean).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CASES = ("interrupt", "kill-driver", "kill-worker", "corrupt")
WAIT_S = 600  # longest wait for a line or an exit: CPU-starved machines are slow
LEFTOVER_GRACE_S = 10  # Ray's own shutdown gets this long before what remains counts as left running


@dataclass
class Outcome:
    case: str
    exit_codes: list[str] = field(default_factory=list)
    left_running: list[str] = field(default_factory=list)
    runs_per_trial: dict[str, int] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    attempts: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def lines(self) -> list[str]:
        counts = sorted(set(self.runs_per_trial.values()))
        retried = {t: a for t, a in self.attempts.items() if a not in ("", "1")}
        return [
            f"== {self.case} ==",
            f"  exit codes:     {', '.join(self.exit_codes)}",
            f"  trials:         {len(self.runs_per_trial)}; runs per trial {counts or '-'} "
            f"({'ok' if counts in ([1], []) else 'DUPLICATED'}); statuses {dict(self.statuses) or '-'}",
            f"  attempts:       {retried or 'every trial in one attempt'}",
            f"  left running:   {'; '.join(self.left_running) or 'nothing'}",
            *([f"  note:           {self.note}"] if self.note else []),
        ]


class Driver:
    """One `orchestrator.sweep` process in its own session; its output read line by line."""

    def __init__(self, work: Path, data: Path, epoch_scale: float, *extra: str):
        command = [sys.executable, "-m", "orchestrator.sweep", "smoke", "--data", str(data)]
        command += ["--storage", str(work / "ray"), "--tracking-uri", tracking_uri(work)]
        command += ["--max-concurrent", "1", "--set", f"epoch_scale={epoch_scale}", "--set", "eval_every_steps=5"]
        self.process = subprocess.Popen(
            [*command, *extra],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []

    @property
    def session(self) -> int:
        return self.process.pid

    def wait_for(self, *needles: str) -> bool:
        """Read until a line holds every needle (True), or the driver ends (False)."""
        deadline = time.monotonic() + WAIT_S
        for line in self.process.stdout:
            self.lines.append(line)
            if all(n in line for n in needles):
                return True
            if time.monotonic() > deadline:
                return False
        return False

    def finish(self) -> str:
        try:
            rest, _ = self.process.communicate(timeout=WAIT_S)
            self.lines.append(rest or "")
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "timeout"
        return str(self.process.returncode)

    def text(self) -> str:
        return "".join(self.lines)


def tracking_uri(work: Path) -> str:
    return f"sqlite:///{work / 'mlruns' / 'mlflow.db'}"


def session_processes(session: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid", "name"]):
        try:
            if process.pid != os.getpid() and os.getsid(process.pid) == session:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def left_running(session: int) -> list[str]:
    """Processes of the (exited) driver's session still alive after a grace period; then stopped by pid."""
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(1)
    left = session_processes(session)
    names = [f"{p.info['name']}({p.pid})" for p in left]
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            pass
    return names


def record_runs(outcome: Outcome, work: Path) -> None:
    from mlflow.tracking import MlflowClient

    if not (work / "mlruns" / "mlflow.db").exists():
        return  # the sweep stopped before it opened a store (nothing to count, and none to create)
    client = MlflowClient(tracking_uri(work))
    experiment = client.get_experiment_by_name("smoke")
    if experiment is None:
        return
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        tags = run.data.tags
        if "mlflow.parentRunId" not in tags:
            outcome.statuses[f"parent {run.info.status}"] += 1
            continue
        trial = tags.get("trial_id", run.info.run_id)
        outcome.runs_per_trial[trial] = outcome.runs_per_trial.get(trial, 0) + 1
        outcome.statuses[run.info.status] += 1
        outcome.attempts[trial] = tags.get("attempt", "")


def resume_argument(text: str) -> list[str]:
    for line in text.splitlines():
        if "--resume" in line and "orchestrator.sweep" in line:
            return ["--resume", line.split("--resume", 1)[1].strip()]
    return ["--resume"]


# ---------------------------------------------------------------- cases


def interrupt(work: Path, data: Path, epoch_scale: float) -> Outcome:
    outcome = Outcome("interrupt (SIGINT to the process group after the first epoch, then --resume)")
    driver = Driver(work, data, epoch_scale)
    if driver.wait_for(" epoch ", "epoch="):
        os.killpg(driver.session, signal.SIGINT)
    outcome.exit_codes.append(f"interrupted {driver.finish()}")
    outcome.left_running += left_running(driver.session)
    resumed = Driver(work, data, epoch_scale, *resume_argument(driver.text()))
    outcome.exit_codes.append(f"resume {resumed.finish()}")
    outcome.left_running += left_running(resumed.session)
    record_runs(outcome, work)
    return outcome


def kill_driver(work: Path, data: Path, epoch_scale: float) -> Outcome:
    outcome = Outcome("kill-driver (SIGKILL to the driver alone after a finished trial, then --resume)")
    driver = Driver(work, data, epoch_scale)
    if driver.wait_for(" finished "):
        driver.process.kill()
    outcome.exit_codes.append(f"killed {driver.finish()}")
    # A SIGKILLed driver's Ray outlives it by design of the kill: the next start must stop it.
    time.sleep(LEFTOVER_GRACE_S)
    before = [f"{p.name()}({p.pid})" for p in session_processes(driver.session)]
    resumed = Driver(work, data, epoch_scale, *resume_argument(""))
    outcome.exit_codes.append(f"resume {resumed.finish()}")
    outcome.left_running += [f"killed driver's: {name}" for name in left_running(driver.session)]
    outcome.left_running += left_running(resumed.session)
    outcome.note = f"{len(before)} process(es) of the killed driver's Ray alive before --resume (it stops them)"
    record_runs(outcome, work)
    return outcome


def kill_worker(work: Path, data: Path, epoch_scale: float) -> Outcome:
    outcome = Outcome("kill-worker (SIGKILL to the running trial's worker after the first epoch)")
    driver = Driver(work, data, epoch_scale)
    killed = ""
    if driver.wait_for(" epoch ", "epoch="):
        for process in session_processes(driver.session):
            title = " ".join(process.cmdline()) if process.is_running() else ""
            if "ImplicitFunc" in title or "train_emotion" in title:
                killed = f"{title.split()[0]}({process.pid})"
                process.kill()
                break
    outcome.exit_codes.append(f"sweep {driver.finish()}")
    outcome.left_running += left_running(driver.session)
    outcome.note = f"killed {killed or 'nothing: no trial worker found'}"
    record_runs(outcome, work)
    return outcome


def corrupt(work: Path, data: Path, epoch_scale: float) -> Outcome:
    outcome = Outcome("corrupt (256 bytes XORed in the middle of one shard of a copied corpus)")
    copy = work / "corrupt-copy"
    shutil.copytree(data, copy)
    shard = sorted((copy / "shards").glob("*.arrow"))[0]
    xor_middle(shard, 256)
    driver = Driver(work, copy, epoch_scale)
    outcome.exit_codes.append(f"sweep {driver.finish()}")
    outcome.left_running += left_running(driver.session)
    outcome.note = next((line.strip() for line in reversed(driver.lines) if line.strip()), "")[:200]
    record_runs(outcome, work)
    return outcome


def xor_middle(path: Path, num_bytes: int) -> None:
    """Flip every bit of `num_bytes` bytes in the middle of the file (its size stays)."""
    with open(path, "r+b") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size // 2 - num_bytes // 2))
        chunk = file.read(num_bytes)
        file.seek(-len(chunk), os.SEEK_CUR)
        file.write(bytes(b ^ 0xFF for b in chunk))


RUNNERS = {"interrupt": interrupt, "kill-driver": kill_driver, "kill-worker": kill_worker, "corrupt": corrupt}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--epoch-scale", type=float, default=0.5, help="smoke's epochs x this (default 0.5)")
    parser.add_argument("--keep", type=Path, default=None, help="keep each case's directory under this one")
    args = parser.parse_args(argv)
    from shards.demo import build_demo_corpus

    root = Path(tempfile.mkdtemp(prefix="faults-")) if args.keep is None else args.keep.resolve()
    data = root / "demo"
    if not data.exists():
        build_demo_corpus(data, seed=0, clips_per_emotion=6)
    failed = False
    for case in args.cases:
        work = root / case
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        started = time.monotonic()
        outcome = RUNNERS[case](work, data, args.epoch_scale)
        print("\n".join(outcome.lines()) + f"\n  took:           {time.monotonic() - started:.0f} s", flush=True)
        failed |= any(n != 1 for n in outcome.runs_per_trial.values()) or bool(outcome.left_running)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
