"""smoke: the whole path on a CPU in a few minutes: tiny random model, demo corpus, 2 x 2 grid."""

from ray import tune

from search_spaces import SweepSpec

SWEEP = SweepSpec(
    name="smoke",
    description="Tiny model on the demo corpus: learning rate x freeze schedule (4 trials, CPU, minutes).",
    base={
        "start": "tiny",
        "train_speakers": ("0011", "0012", "0013", "0014"),
        "eval_sets": {"test_en": ("0015",), "test_zh": ("0002",)},
        "batch_size": 8,
        # A randomly initialised tiny encoder needs more passes than XLSR-53 does.
        "epoch_scale": 4.0,
        "eval_every_steps": 15,
    },
    space={
        "learning_rate": tune.grid_search([1e-3, 2e-3]),
        "schedule": tune.grid_search(["paper_finer", "full"]),
    },
    metric="val/accuracy",
    presets={
        "tiny": {},
        # `python -m bench peer`'s 8-trial size: the peer's grid of 8 learning rates around 1e-3 and 2e-3
        # (bench/peer_trainer.py LEARNING_RATES_8), one schedule.
        "peer8": {
            "schedule": "full",
            "learning_rate": tune.grid_search([5e-4, 7e-4, 1e-3, 1.4e-3, 2e-3, 2.8e-3, 4e-3, 5.6e-3]),
        },
    },
    default_preset="tiny",
)
