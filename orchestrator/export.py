"""Export a trained model for people who do not use this tool: a Hugging Face model directory (its card,
feature extractor and code, loadable with `trust_remote_code=True`), ONNX, and the Hugging Face Hub.

    python -m orchestrator.export MODEL --out DIR                      # a directory for pipeline(...)
    python -m orchestrator.export MODEL --out DIR --push-to-hub me/esd-emotion
    python -m orchestrator.export MODEL --onnx model.onnx              # ONNX (dynamic batch and length)

MODEL takes the forms of `predict --model`: a trial or sweep run id (a sweep: its best trial),
runs:/<run id>/model, models:/NAME@alias, models:/NAME/VERSION, or a directory holding a saved model.
Fine-tuned models only: the baselines' models are not transformers models. A LoRA model's adapters
are merged into its encoder, so the exported model needs no peft and no base checkpoint.
Exit status: 0 when everything asked for was written, 1 when the model cannot be loaded or exported,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from orchestrator import paths
from orchestrator.predict import ModelLoadError, local_or_fetched_model_dir
from orchestrator.results import StoreError
from workers.kinds import FINETUNE, kind_of_saved_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.export",
        description="Export a fine-tuned model as a Hugging Face model directory (model card, feature extractor, "
        "code for trust_remote_code=True), as ONNX, and/or to the Hugging Face Hub.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a run id, runs:/<id>/model, models:/NAME@alias, or a directory")
    parser.add_argument("--out", type=Path, default=None, help="write the Hugging Face model directory here")
    parser.add_argument("--onnx", type=Path, default=None, metavar="OUT.onnx", help="write the ONNX graph here")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the directory to this Hub repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default: SQLite under ./mlruns")
    args = parser.parse_args(argv)
    if not (args.out or args.onnx or args.push_to_hub):
        parser.error("say what to write: --out DIR, --onnx OUT.onnx and/or --push-to-hub REPO")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tracking_uri = args.tracking_uri or paths.default_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="emotion-export-") as tmp:
        try:
            source_dir, source = local_or_fetched_model_dir(args.model, tracking_uri, Path(tmp) / "fetched")
            out = args.out or Path(tmp) / "hf"
            export_dir(source_dir, out)
        except (ModelLoadError, StoreError, ValueError) as error:
            print(f"export: {error}", file=sys.stderr)
            return 1
        print(f"export: Hugging Face model directory {out} (from {next(iter(source.values()))})")
        if args.onnx:
            from workers.finetune.hub.onnx_export import export_onnx

            print(f"export: ONNX {export_onnx(out, args.onnx)}")
        if args.push_to_hub:
            print(f"export: pushed to {push_to_hub(out, args.push_to_hub, args.private)}")
    return 0


def export_dir(source_dir: Path, out: Path) -> Path:
    """The saved model in `source_dir` (or the MLflow Model holding one) as a self-contained HF directory."""
    from workers.finetune.checkpoint import load_model, resolve_model_dir, save_model
    from workers.finetune.encoders.lora import has_lora
    from workers.finetune.export import merged_copy
    from workers.finetune.hub.card import CARD_FILE

    kind = kind_of_saved_model(source_dir)
    if kind.name != FINETUNE:
        raise ValueError(f"{source_dir} holds a {kind.model_kind} model; export takes fine-tuned models only")
    model_dir = resolve_model_dir(source_dir)
    try:
        model = load_model(model_dir)
    except Exception as error:  # not a model directory, weights of another version, a missing LoRA base
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"cannot load the model in {model_dir}: {reason}") from None
    if model.dimensions:  # the Hub's remote code and ONNX graph have the class head only
        raise ValueError(f"{model_dir} predicts dimensions {model.dimensions}: export takes categorical models only")
    save_model(merged_copy(model) if has_lora(model.encoder) else model, out)
    card = model_dir / CARD_FILE
    if card.exists():
        shutil.copyfile(card, out / CARD_FILE)
    else:
        print(f"export: {model_dir} has no model card (trained before cards were written); none exported")
    return out


def push_to_hub(directory: Path, repo_id: str, private: bool) -> str:
    """Create the repo if needed and upload the directory (model, card, code); the repo's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
    api.upload_folder(folder_path=str(directory), repo_id=repo_id, commit_message="emotion-sweep export")
    return str(url)


if __name__ == "__main__":
    sys.exit(main())
