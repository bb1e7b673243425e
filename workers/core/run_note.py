"""A trial run's description (MLflow's run note, `Tag.NOTE`): what it trained on, who each test set holds,
and where its figures are, in plain words. Import-light: text only."""

from __future__ import annotations

from pathlib import Path

from workers.vocabulary import Key


def trial_note(
    trained: str,
    corpus: str,
    train_speakers: tuple[str, ...],
    clips: dict[str, int],
    eval_sets: dict[str, tuple[str, ...]],
    other_corpora: dict[str, str] | None = None,
    logged_model: bool = True,
) -> str:
    """Markdown for the run page's Description box.

    `trained`: what was trained, in words (e.g. "the `tiny` start (wav2vec2), every layer"); `clips`: clips
    per split (`train`, `val`, each test set); `eval_sets`: the held-out speakers of each test set;
    `other_corpora`: held-out sets from other corpora (--eval-data) and what they hold; `logged_model`: the
    run logs an MLflow Model with curves (fine-tuning), not a `model/` artifact folder (the baselines).
    """
    other_corpora = other_corpora or {}
    train = ", ".join(train_speakers) or "-"
    lines = [f"Trained {trained} on **{corpus}**, speakers {train} ({clips.get('train', 0)} clips)."]
    if "val" in clips:
        lines[0] += (
            f" `val` ({clips['val']} clips) is held out from the same speakers: trials are ranked on it, "
            "never on a test set."
        )
    tests = [name for name in eval_sets if name != "val"]
    if tests or other_corpora:
        lines += ["", "Held-out test sets (speakers never trained on):"]
        for name in tests:
            speakers = ", ".join(eval_sets[name])
            plural = "s" if len(eval_sets[name]) != 1 else ""
            lines.append(f"- `{name}`: speaker{plural} {speakers} ({clips.get(name, 0)} clips)")
        for name, description in other_corpora.items():
            lines.append(f"- `{name}`: another corpus, {description}")
    sets = ["val", *tests, *other_corpora] if "val" in clips else [*tests, *other_corpora]
    figures = ", ".join(f"`{Key.confusion_matrix(name)}`" for name in sets)
    lines += [
        "",
        f"Confusion matrices: Artifacts tab, {figures}; per-emotion tables in "
        f"`{Key.classification_report('<set>', 'txt')}`, calibration in `reliability_<set>.png`.",
    ]
    if logged_model:
        lines.append(
            f"Learning curves are the `{Key.CURVE_PREFIX}*` charts (step = training step); `<set>/...` metrics are "
            f"the final model's, each set's headline ones linked to the logged model `{Key.MODEL_DIR}` (Models tab)."
        )
    else:
        lines.append(f"`<set>/...` metrics are the final model's; the model is the artifact folder `{Key.MODEL_DIR}/`.")
    return "\n".join(lines)


def split_note(trained: str, cfg, split) -> str:
    """`trial_note` for a trial that reads a `workers.core.evaluation.SpeakerSplit` (the baselines)."""
    clips = {"train": len(split.train_rows), **{name: len(rows) for name, rows in split.eval_rows.items()}}
    corpus = Path(cfg.data_dir).name
    return trial_note(trained, corpus, tuple(cfg.train_speakers), clips, dict(cfg.eval_sets), logged_model=False)
