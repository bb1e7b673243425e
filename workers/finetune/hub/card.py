"""The model card (README.md in a saved model directory), in Hugging Face's format (YAML metadata + Markdown).

It says what a colleague needs before trusting the model: the start checkpoint, the corpus and its
split plan with the held-out speakers, the held-out metrics (accuracy, UAR, macro F1 per set), the
trial's config, the label set, how to run it, and the limits of emotion recognition from speech.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

CARD_FILE = "README.md"
TABLE_METRICS = (("accuracy", "Accuracy"), ("uar", "UAR"), ("macro_f1", "Macro F1"))
LIMITS = """\
- Emotion corpora such as ESD, RAVDESS, CREMA-D and EmoDB are **acted**: speakers read fixed sentences
  in a requested emotion. Spontaneous speech expresses emotion more subtly and more mixed; expect lower
  accuracy on it.
- The held-out numbers above come from speakers never heard in training, but from the same corpus,
  microphones and rooms. Other speakers, languages, accents, ages, recording conditions and lengths of
  clip were not measured; the paper this recipe follows saw English-to-Mandarin transfer fall from 0.93
  to 0.32 without Mandarin training data.
- The model picks one of its labels for every clip, including clips with no emotion it knows. Use the
  probabilities (and an abstention threshold, as `python -m orchestrator.predict --threshold` does).
- Inferring a person's emotional state is sensitive: do not use it to make decisions about people
  without their informed consent and human review."""


@dataclass
class CardFacts:
    """What the card says, gathered by the trial (or from its MLflow run by the export command)."""

    start: str  # hub id, named start or directory the encoder started from
    labels: tuple[str, ...]
    corpus: str  # the corpus's name (its shard directory's name or manifest source)
    train_speakers: tuple[str, ...]
    eval_sets: dict[str, tuple[str, ...]]  # held-out set -> its speakers
    metrics: dict[str, float]  # `<set>/<metric>` keys, as the trial logs them
    config: dict = field(default_factory=dict)  # the trial's config values
    base_model: str = ""  # a hub id for the card's metadata ("" when the start is local or random)
    source: str = ""  # where it was trained: sweep, trial, run id


def held_out_table(facts: CardFacts) -> str:
    sets = ["val", *facts.eval_sets] if any(key.startswith("val/") for key in facts.metrics) else list(facts.eval_sets)
    header = "| set | speakers | " + " | ".join(title for _, title in TABLE_METRICS) + " |"
    rows = [header, "|" + "---|" * (len(TABLE_METRICS) + 2)]
    for name in sets:
        speakers = "training speakers' held-out clips" if name == "val" else ", ".join(facts.eval_sets[name])
        values = [facts.metrics.get(f"{name}/{key}") for key, _ in TABLE_METRICS]
        cells = ["" if value is None else f"{value:.3f}" for value in values]
        rows.append(f"| {name} | {speakers} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def card_text(facts: CardFacts) -> str:
    """The card's Markdown body (without metadata)."""
    labels = ", ".join(facts.labels)
    held_out = "; ".join(f"`{name}`: {', '.join(speakers)}" for name, speakers in facts.eval_sets.items())
    config = json.dumps(facts.config, indent=1, sort_keys=True, default=str)
    return f"""
# Speech emotion recognition: {facts.start} fine-tuned on {facts.corpus}

Classifies a clip of speech (mono, 16 kHz) into one of {len(facts.labels)} emotions: {labels}.
Trained with emotion-sweep (the recipe of *Transfer learning in audio-based
emotion detection*: a speech encoder, mean pooling over the frames that hold audio, dense-tanh-dropout-projection).
{f"Source: {facts.source}." if facts.source else ""}

## Use

```python
from transformers import pipeline

classifier = pipeline("audio-classification", model="PATH_OR_REPO", trust_remote_code=True)
classifier("clip.wav")  # or a float array at 16 kHz: [{{"label": ..., "score": ...}}, ...]
```

The model's code (`modeling_emotion_sweep.py`) is in this directory; it needs torch and transformers only.

## Training data and split

- Corpus: {facts.corpus}
- Start checkpoint: {facts.start}
- Training speakers: {", ".join(facts.train_speakers)} (a share of their clips held out as `val` for model selection)
- Held-out speakers, never heard in training: {held_out}

## Held-out results

{held_out_table(facts)}

Accuracy: share of clips right. UAR: unweighted average recall (mean of per-class recall). Macro F1:
mean of per-class F1. Both averages are over the model's labels.

## Labels

{", ".join(f"{i}: {label}" for i, label in enumerate(facts.labels))}

## Training config

```json
{config}
```

## Limits

{LIMITS}
"""


def write_model_card(directory: str | Path, facts: CardFacts) -> Path:
    """README.md in `directory`: metadata Hugging Face reads (pipeline tag, library, base model) + the text."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="audio-classification",
        tags=["speech-emotion-recognition", "emotion-sweep", "custom_code"],
        base_model=facts.base_model or None,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{card_text(facts)}")
    path = Path(directory) / CARD_FILE
    card.save(path)
    return path
