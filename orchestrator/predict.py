"""Use a trained trial on your own audio: the emotion and its probabilities per file, or "uncertain".

    python -m orchestrator.predict --model <trial run id> a.wav b.flac
    python -m orchestrator.predict --model <sweep parent run id> a.wav      # its best trial
    python -m orchestrator.predict --model models:/emotion@champion a.wav   # a registered model (sweep --register)
    python -m orchestrator.predict --model runs:/<run id>/model a.wav
    python -m orchestrator.predict --model ray_results/<sweep>/<phase>/<trial> *.wav --json

The paper's ethics section proposes abstaining when the model is unsure: below the confidence
threshold (top probability, default 0.8) the answer is "uncertain", with the emotions that compete.
Each trial logs `<set>/ece` and `reliability_<set>.png` to help choose the threshold.

Files longer than --max-seconds are refused (the model was trained on single utterances, and
wav2vec2's attention grows with the square of the length); cut long recordings into utterances.
Exit status: 0 when at least one file was answered (an "uncertain" answer counts), 1 when no file
could be answered or the model could not be loaded, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import paths, results, tracking
from orchestrator.results import StoreError
from shards.user_audio import AudioFileError, read_audio
from workers.core.calibration import DEFAULT_THRESHOLD
from workers.kinds import FINETUNED_MODEL_KIND, kind_of_saved_model, model_markers
from workers.vocabulary import Key, Tag

MAX_COMPETING = 3
DEFAULT_MAX_SECONDS = 30.0


class ModelLoadError(RuntimeError):
    """The model cannot be found or loaded; one line for the user."""


@dataclass
class LoadedModel:
    model: object  # workers.finetune.model.EmotionClassifier (torch is imported lazily), or a features model
    labels: list[str]
    source: dict = field(default_factory=dict)  # where it came from, for the output
    kind: str = FINETUNED_MODEL_KIND  # what the model directory held (workers.kinds.saved_model_kind)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.predict",
        description="Predict the emotion of audio files with a trial's model; abstain ('uncertain') below a "
        "confidence threshold. Reads WAV, FLAC, OGG, MP3, ... at any sample rate, mono or stereo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        metavar="MODEL",
        help="an MLflow run id (a trial's model; a sweep's parent run: its best trial, by the rule of the "
        "driver's summary and the report), runs:/<run id>/model, models:/NAME@alias or models:/NAME/VERSION, "
        "or a directory: a saved model, an MLflow Model, or a Tune trial/checkpoint directory holding one",
    )
    source.add_argument("--run", metavar="RUN_ID", help="deprecated: --model RUN_ID")
    source.add_argument("--checkpoint", type=Path, metavar="DIR", help="deprecated: --model DIR")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio files to analyse")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default: SQLite under ./mlruns")
    parser.add_argument(
        "--threshold",
        type=_probability,
        default=DEFAULT_THRESHOLD,
        help="answer 'uncertain' when the top probability is below this (the paper's ethics section: 0.8)",
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive,
        default=DEFAULT_MAX_SECONDS,
        help="refuse longer files (the model knows single utterances; cut recordings first)",
    )
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        loaded = load_for_prediction(args)
    except (ModelLoadError, StoreError) as error:
        print(f"predict: {error}", file=sys.stderr)
        return 1
    import torch

    try:
        device = torch.device(
            "cuda"
            if args.device == "auto" and torch.cuda.is_available()
            else "cpu"
            if args.device == "auto"
            else args.device
        )
        loaded.model.to(device)  # a features model stays on the CPU (openSMILE and scikit-learn)
    except (RuntimeError, AssertionError) as error:  # unknown device string, or no such GPU here
        print(
            f"predict: cannot use device {args.device!r}: {str(error).strip().splitlines()[0][:200]}", file=sys.stderr
        )
        return 1
    results = [answer_file(loaded, path, device, args.threshold, args.max_seconds) for path in args.files]
    answered = sum(r["answered"] for r in results)
    if args.json:
        print(
            json.dumps(
                {
                    "model": loaded.source,
                    "threshold": args.threshold,
                    "max_seconds": args.max_seconds,
                    "labels": loaded.labels,
                    "answered": answered,
                    "files": results,
                },
                indent=2,
            )
        )
    else:
        print_text(loaded, results, args.threshold)
    return 0 if answered else 1


# ---------------------------------------------------------------- the model


def load_for_prediction(args: argparse.Namespace) -> LoadedModel:
    """--model (or the deprecated --run / --checkpoint): a directory, a runs:/ or models:/ URI, or a run id."""
    model = args.model or args.run or str(args.checkpoint)
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    if args.checkpoint is not None or Path(model).expanduser().exists():
        directory = find_model_dir(Path(model).expanduser())
        print(f"predict: loading {directory}", file=sys.stderr)
        return _load(directory, {"checkpoint": str(directory)})
    with tempfile.TemporaryDirectory() as tmp:
        return _load(*fetch_model_dir(tracking_uri, model, Path(tmp)))


def local_or_fetched_model_dir(model: str, tracking_uri: str, into: Path) -> tuple[Path, dict]:
    """--model as a directory (found as predict finds it) or fetched from the tracking server into `into`."""
    if Path(model).expanduser().exists():
        directory = find_model_dir(Path(model).expanduser())
        return directory, {"checkpoint": str(directory)}
    return fetch_model_dir(tracking_uri, model, into)


def fetch_model_dir(tracking_uri: str, model: str, into: Path) -> tuple[Path, dict]:
    """A run id, runs:/ or models:/ URI: its model downloaded into `into`, and where it came from."""
    if model.startswith(("runs:/", "models:/")):
        return fetch_from_uri(tracking_uri, model, into)
    return fetch_from_run(tracking_uri, model, into)


def fetch_from_uri(tracking_uri: str, uri: str, into: Path) -> tuple[Path, dict]:
    """A logged or registered MLflow Model: `runs:/<run id>/model`, `models:/NAME@alias`, `models:/NAME/VERSION`."""
    results.connect(tracking_uri)  # one line when the store is missing or unreachable
    try:
        local = tracking.download_uri(tracking_uri, uri, str(into))
    except Exception as error:  # no such model, alias or version, or the artifact store is unreachable
        raise ModelLoadError(f"cannot fetch {uri} from {tracking_uri}: {tracking.first_line(error)}") from None
    print(f"predict: loading {uri}", file=sys.stderr)
    return Path(local), {"model_uri": uri}


def fetch_from_run(tracking_uri: str, run_id: str, into: Path) -> tuple[Path, dict]:
    """A trial run's `model/` artifact; for a sweep's parent run, that of its best trial (`results.best`)."""
    client = results.connect(tracking_uri)
    run = results.get_run(client, run_id)
    if run is None:
        raise ModelLoadError(f"no run {run_id} in {tracking_uri}")
    source = {"run_id": run_id}
    metric = Key.VAL_ACCURACY
    if Tag.PARENT_RUN not in run.data.tags:
        sweep = results.load_sweep(client, run)
        trial = sweep.best()
        if trial is None:
            raise ModelLoadError(
                f"run {run_id} is the parent run of sweep {sweep.name} and none of its "
                f"{len(sweep.trials)} trial run(s) finished; pass a trial's run id"
            )
        metric = sweep.metric
        print(
            f"predict: run {run_id} is the parent run of sweep {sweep.name}; using its best trial {trial.trial_id} "
            f"(run {trial.run_id}, {metric} {trial.metric(metric):.3f})",
            file=sys.stderr,
        )
        source = {"run_id": trial.run_id, "parent_run_id": run_id}
        run = results.get_run(client, trial.run_id)
    tags = run.data.tags
    source.update(
        {
            "trial_id": tags.get(Tag.TRIAL_ID, ""),
            "sweep": tags.get(Tag.SWEEP, ""),
            metric: run.data.metrics.get(metric),
        }
    )
    try:
        local = tracking.download(client, run.info.run_id, Key.MODEL_DIR, str(into))
    except Exception as error:  # no such artifact, or the artifact store is unreachable
        raise ModelLoadError(
            f"run {run.info.run_id} ({run.info.status}) has no readable model/ artifact: "
            f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__}"
        ) from None
    print(f"predict: loading model of run {run.info.run_id}", file=sys.stderr)
    return Path(local), source


def find_model_dir(path: Path) -> Path:
    """A model directory itself, or the one checkpoint under a Tune trial directory (its latest)."""
    from workers.finetune.checkpoint import WEIGHTS_FILE, is_model_dir, resolve_model_dir

    model_dir = resolve_model_dir(path)
    if is_model_dir(model_dir):
        return model_dir
    if any((path / marker).exists() for marker in model_markers()):
        return path
    if not path.is_dir():
        raise ModelLoadError(f"--model {path} is not a directory")
    found = sorted(p.parent for p in path.rglob(WEIGHTS_FILE) if is_model_dir(p.parent))
    found += sorted(p.parent for marker in model_markers() for p in path.rglob(marker))
    if not found:
        raise ModelLoadError(f"no saved model under {path} (a model directory holds {WEIGHTS_FILE} and config.json)")
    if len({p.parent for p in found}) > 1:
        shown = "\n  ".join(str(p) for p in found[:5])
        raise ModelLoadError(f"{path} holds {len(found)} checkpoints of several trials; pass one of them:\n  {shown}")
    return found[-1]  # checkpoint_000001 sorts after checkpoint_000000


def _load(directory: Path, source: dict) -> LoadedModel:
    """The model a directory holds, loaded by its kind's loader (workers.kinds: the marker file its trial wrote)."""
    kind = kind_of_saved_model(directory)
    try:
        model = kind.load_saved_model(directory)
    except ValueError as error:  # a kind that cannot answer from audio
        raise ModelLoadError(str(error)) from None
    except Exception as error:  # corrupt weights, a config of another version, ...
        raise ModelLoadError(
            f"cannot load the model in {directory}: {str(error).strip().splitlines()[0][:200]}"
        ) from None
    return LoadedModel(model, list(model.labels), source, kind.model_kind)


# ---------------------------------------------------------------- one file


def answer_file(loaded: LoadedModel, path: Path, device, threshold: float, max_seconds: float) -> dict:
    try:
        clip = read_audio(path, max_seconds=max_seconds)
    except AudioFileError as error:
        return {"file": str(path), "answered": False, "error": str(error)}
    answer: dict = {}
    if loaded.labels:  # a model trained on dimensions only answers values, no class
        probabilities = probabilities_of(loaded, clip.audio, device)
        answer = {
            **decide(loaded.labels, probabilities, threshold),
            "probabilities": {label: round(float(p), 4) for label, p in zip(loaded.labels, probabilities)},
        }
    dimensions = tuple(getattr(loaded.model, "dimensions", ()))
    if dimensions:  # arousal, valence, ...: on the training corpus's scale
        answer["values"] = {d: round(float(v), 4) for d, v in zip(dimensions, loaded.model.values(clip.audio))}
    return {
        "file": str(path),
        "answered": True,
        **answer,
        "audio": {
            "seconds": round(clip.seconds, 3),
            "sample_rate": clip.source_rate,
            "channels": clip.source_channels,
            "format": clip.source_format,
        },
    }


def probabilities_of(loaded: LoadedModel, audio, device):
    """Class probabilities for one mono 16 kHz float clip in [-1, 1], by the model's own kind.

    A fine-tuned model takes int16 samples and lengths, as the shards feed it in training, so every
    encoder family prepares its own input from them (normalised waveform, or Whisper's log-mel); a
    features model needs only the audio.
    """
    return loaded.model.probabilities(audio)


def decide(labels: list[str], probabilities, threshold: float) -> dict:
    """The top emotion when its probability reaches the threshold; otherwise "uncertain" and the
    emotions that compete: the fewest (2 to 3) that together hold `threshold` of the probability."""
    order = sorted(range(len(labels)), key=lambda i: -float(probabilities[i]))
    top = order[0]
    confidence = float(probabilities[top])
    if confidence >= threshold:
        return {"decision": labels[top], "emotion": labels[top], "confidence": round(confidence, 4), "competing": []}
    competing, total = [], 0.0
    for i in order[:MAX_COMPETING]:
        competing.append(labels[i])
        total += float(probabilities[i])
        if len(competing) >= 2 and total >= threshold:
            break
    return {"decision": "uncertain", "emotion": None, "confidence": round(confidence, 4), "competing": competing}


# ---------------------------------------------------------------- output


def print_text(loaded: LoadedModel, results: list[dict], threshold: float) -> None:
    source = loaded.source
    where = (
        source.get("checkpoint")
        or source.get("model_uri")
        or f"run {source.get('run_id')}"
        + (f" (trial {source['trial_id']}, sweep {source['sweep']})" if source.get("trial_id") else "")
    )
    print(f"model: {where}; abstains below {threshold:.2f}")
    for result in results:
        name = result["file"]
        if not result["answered"]:
            print(f"{name}: not answered: {result['error']}")
            continue
        values = "  ".join(f"{d} {v:.2f}" for d, v in result.get("values", {}).items())
        if "decision" not in result:
            print(f"{name}: {values}   [{result['audio']['seconds']:.1f} s]")
            continue
        probabilities = result["probabilities"]
        if result["decision"] == "uncertain":
            rivals = ", ".join(f"{e} ({probabilities[e]:.2f})" for e in result["competing"])
            print(
                f"{name}: uncertain: {rivals} compete; the top probability {result['confidence']:.2f} is below "
                f"{threshold:.2f}, a person should listen"
            )
        else:
            print(f"{name}: {result['emotion']} ({result['confidence']:.2f})")
        ranked = sorted(probabilities.items(), key=lambda item: -item[1])
        print("    " + "  ".join(f"{e} {p:.2f}" for e, p in ranked) + f"   [{result['audio']['seconds']:.1f} s]")
        if values:
            print(f"    {values}")
    answered = [r for r in results if r["answered"]]
    uncertain = sum(r.get("decision") == "uncertain" for r in answered)
    print(
        f"{len(answered)} of {len(results)} file(s) answered ({uncertain} uncertain)"
        + (f"; {len(results) - len(answered)} could not be analysed" if len(answered) < len(results) else "")
    )


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
