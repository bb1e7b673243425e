"""Pre-fetch start weights into a directory that every cluster worker reads (no network in trials).

    python -m orchestrator.weights fetch finer vanilla --dir /shared/weights
    python -m orchestrator.weights show finer --dir /shared/weights     # the checkpoint's own settings

The directory uses the Hugging Face cache layout (models--org--name/snapshots/<commit>/...), so
trials load from it with `--set weights_dir=/shared/weights` and never touch the network; with
HF_HUB_OFFLINE=1 nothing else does either. Only the config and one copy of the PyTorch weights are
fetched (safetensors when the repo has them), not language models or other frameworks' weights.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from workers.finetune.config import ENCODER_CONFIG_FIELDS, START_MODELS, TrialConfig

CONFIG_FILES = ("config.json", "preprocessor_config.json")
# One copy of the weights: a single file, or numbered shards with their index. Repos such as
# openai/whisper-large-v3 also carry fp32 copies (model.fp32-*.safetensors) that trials never read.
SAFETENSORS = re.compile(r"model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json")
PYTORCH_BIN = re.compile(r"pytorch_model(-\d+-of-\d+)?\.bin|pytorch_model\.bin\.index\.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.weights",
        description="Pre-fetch start weights (finer, vanilla, any hub id) into a shared directory, or show "
        "a fetched checkpoint's regularisation settings next to the trial config's.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download config and weights of each start into --dir")
    fetch_parser.add_argument("starts", nargs="+", help=f"named starts ({', '.join(START_MODELS)}) or hub ids")
    fetch_parser.add_argument("--dir", type=Path, required=True, help="shared weights directory (trials: weights_dir)")
    fetch_parser.add_argument("--revision", default="", help="branch, tag or commit (default: the repo's default)")
    show_parser = commands.add_parser("show", help="print a start's config values that trials set explicitly")
    show_parser.add_argument("start", help="named start, hub id or local directory")
    show_parser.add_argument(
        "--dir", type=Path, default=None, help="weights directory to read offline (default: the Hugging Face cache)"
    )
    show_parser.add_argument("--revision", default="")
    show_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def repo_id(start: str) -> str:
    return START_MODELS.get(start, start)


def weight_files(files: list[str]) -> list[str]:
    """The files a trial needs from a repo listing: configs and one format of PyTorch weights.

    Only top-level files: repos such as the finer start also carry a KenLM language model.
    """
    top = [f for f in files if "/" not in f]
    if "config.json" not in top:
        raise ValueError("the repo has no config.json at its top level; is it a transformers model?")
    safetensors = _one_copy([f for f in top if SAFETENSORS.fullmatch(f)], "model.safetensors")
    pytorch = _one_copy([f for f in top if PYTORCH_BIN.fullmatch(f)], "pytorch_model.bin")
    weights = safetensors if any(f.endswith(".safetensors") for f in safetensors) else pytorch
    if not weights:
        raise ValueError(f"the repo has no PyTorch weights at its top level (files: {', '.join(sorted(top)[:12])})")
    return [f for f in CONFIG_FILES if f in top] + sorted(weights)


def _one_copy(files: list[str], single: str) -> list[str]:
    """The single-file weights when the repo has them, else its shards and index."""
    return [single] if single in files else files


def fetch(start: str, directory: Path, revision: str = "") -> Path:
    from huggingface_hub import HfApi, snapshot_download

    repo = repo_id(start)
    files = weight_files(HfApi().list_repo_files(repo, revision=revision or None))
    print(f"{start}: fetching {', '.join(files)} of {repo} into {directory} ...", flush=True)
    snapshot = snapshot_download(repo, revision=revision or None, cache_dir=str(directory), allow_patterns=files)
    return Path(snapshot)


def checkpoint_settings(start: str, directory: Path | None, revision: str = "") -> dict:
    """The start's own values of the fields a trial sets explicitly, next to TrialConfig's defaults."""
    from workers.finetune.encoders import hidden_size, load_config, num_layers, regularisation_overrides

    source = repo_id(start)
    if Path(source).exists():
        config = load_config(str(Path(source).resolve()))
    else:
        options = {"cache_dir": str(directory), "local_files_only": True} if directory else {}
        config = load_config(source, revision=revision or None, **options)
    defaults = TrialConfig()
    # The trial's names under this family's config names (Whisper: dropout, encoder_layerdrop, ...).
    names = regularisation_overrides(config, {name: name for name in ENCODER_CONFIG_FIELDS})
    return {
        "start": start,
        "source": source,
        "architecture": {
            "family": config.model_type,
            "layers": num_layers(config),
            "hidden_size": hidden_size(config),
            "architectures": config.architectures,
        },
        "fields": {
            name: {"checkpoint": getattr(config, own_name, None), "trial_default": getattr(defaults, name)}
            for own_name, name in names.items()
        },
    }


def print_settings(settings: dict) -> None:
    arch = settings["architecture"]
    print(
        f"{settings['start']} ({settings['source']}): {arch['layers']} layers, width {arch['hidden_size']}, "
        f"saved as {', '.join(arch['architectures'] or ['?'])}"
    )
    print(f"{'field':22s} {'checkpoint':>12s} {'trial default':>14s}")
    for name, values in settings["fields"].items():
        marker = "" if values["checkpoint"] == values["trial_default"] else "   <- differs (--set to match)"
        print(f"{name:22s} {values['checkpoint']!s:>12s} {values['trial_default']!s:>14s}{marker}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fetch":
        args.dir.mkdir(parents=True, exist_ok=True)
        for start in args.starts:
            try:
                snapshot = fetch(start, args.dir, args.revision)
            except Exception as error:  # network, auth, missing repo: say which start failed
                raise SystemExit(f"{start}: fetch failed: {error}") from None
            print(f"{start}: ready at {snapshot}")
        print(f"trials read these offline with: --set weights_dir={args.dir.resolve()}")
        return 0
    try:
        settings = checkpoint_settings(args.start, args.dir, args.revision)
    except OSError as error:  # a start that names nothing readable: a usage error
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        parser.error(
            f"{args.start}: no config found ({reason}); fetch it first: "
            f"python -m orchestrator.weights fetch {args.start} --dir DIR"
        )
    if args.json:
        print(json.dumps(settings, indent=1))
    else:
        print_settings(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
