"""encoders: which speech encoder, fine-tuned how, is best on this corpus (EmoBox's encoder comparison, tuned).

The encoder (`start`) is a grid axis over five families: wav2vec2 (XLS-R 300M), HuBERT, WavLM,
data2vec-audio and the Whisper encoder, all large. Each is fine-tuned with its own learning rate and
freeze schedule tuned (scenario `fine_tune`), and adapted with LoRA with its learning rate and rank
tuned (scenario `lora`). Trained on the paper plan's 4 English speakers (10% of their clips validate
and rank trials), tested on the held-out 5th; `--folds loso|emobox` rotates the held-out speaker.
The report's encoder table gives EmoBox's columns per encoder: unweighted accuracy, weighted
accuracy and macro F1, mean and std over folds.
"""

from ray import tune

from search_spaces import Scenario, SweepSpec
from workers.finetune.encoders import FAMILIES

# Each registered family's large start (its Family.sweep_start), in registration order.
ENCODERS = tuple(family.sweep_start for family in FAMILIES.values() if family.sweep_start)
# One small random config per family, built offline (its Family.tiny_start).
TINY_ENCODERS = tuple(family.tiny_start for family in FAMILIES.values())


def tiny(spec: SweepSpec) -> SweepSpec:
    """2 CPU cores, a few minutes: every family's tiny random encoder fine-tuned once, plus one LoRA trial."""
    return spec.replace(
        base={
            "batch_size": 8,
            "eval_every_steps": 15,
            "epoch_scale": 1.0,  # 2 epochs of "full" on the demo corpus: the whole path, not a fair ranking
            "layerdrop": 0.0,
        },
        num_samples=1,
        scenarios=(
            Scenario(
                "fine_tune",
                values={"learning_rate": 1e-3, "schedule": "full"},
                space={"start": tune.grid_search(list(TINY_ENCODERS))},
            ),
            Scenario("lora", values={"start": "tiny", "schedule": "lora", "learning_rate": 3e-3, "lora_rank": 4}),
        ),
    )


SWEEP = SweepSpec(
    name="encoders",
    description="Encoder families as a grid axis (XLS-R, HuBERT, WavLM, data2vec, Whisper), lr and schedule "
    "tuned per encoder, plus LoRA; EmoBox-style encoder table.",
    base={"layerdrop": 0.0},  # lets any trial switch to pooling=weighted_sum with --set
    space={},
    scenarios=(
        Scenario(
            "fine_tune",
            space={
                "start": tune.grid_search(list(ENCODERS)),
                "learning_rate": tune.loguniform(1e-5, 2e-4),
                "schedule": tune.grid_search(["paper_finer", "full"]),
            },
        ),
        Scenario(
            "lora",
            values={"schedule": "lora", "lora_target": "attention"},
            space={
                "start": tune.grid_search(list(ENCODERS)),
                "learning_rate": tune.loguniform(1e-4, 2e-3),
                "lora_rank": tune.choice([8, 16]),
            },
        ),
    ),
    num_samples=2,
    plan="paper",
    test_sets=("test_en",),
    fold_language="en",
    presets={"tiny": tiny},
)
