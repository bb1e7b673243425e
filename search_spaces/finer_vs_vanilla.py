"""finer_vs_vanilla: the paper's Tables 1-2, with the recipe tuned for both starts.

Finer (XLSR-53 already fine-tuned for English speech-to-text) against vanilla (XLSR-53 as
pre-trained): learning rate, batch size and freeze schedule tuned for each; trained on the paper
plan's 4 English speakers (10% of their clips validate, and rank trials), tested on the held-out
5th English speaker. The paper's own recipe for each start runs as an extra point.
"""

from dataclasses import replace

from ray import tune

from search_spaces import Scenario, SweepSpec

PAPER_RECIPE = {"learning_rate": 1e-4, "batch_size": 8}


def tiny(spec: SweepSpec) -> SweepSpec:
    """2 CPU cores, a minute or two: the tiny random encoder for both arms, one point each."""
    tiny_spec = spec.override(
        {
            "start": "tiny",  # no weights offline: both arms start from the same tiny random encoder
            "learning_rate": 1e-3,  # a random tiny encoder needs a larger step than XLSR-53
            "batch_size": 8,
            "epoch_scale": 3.0,  # a random encoder learns slowly: 6 epochs of "full" get above chance on the demo
            "eval_every_steps": 15,
            "schedule": tune.grid_search(["paper_finer", "full"]),
        }
    )
    return tiny_spec.replace(num_samples=1, scenarios=tuple(replace(s, points=()) for s in tiny_spec.scenarios))


SWEEP = SweepSpec(
    name="finer_vs_vanilla",
    description="Paper Tables 1-2: finer vs vanilla start, lr x batch x freeze schedule, held-out English speaker.",
    base={},
    space={
        "learning_rate": tune.loguniform(2e-5, 3e-4),
        "batch_size": tune.choice([8, 16]),
        "schedule": tune.grid_search(["paper_finer", "paper_vanilla", "full"]),
    },
    scenarios=(
        Scenario("finer", values={"start": "finer"}, points=({**PAPER_RECIPE, "schedule": "paper_finer"},)),
        Scenario("vanilla", values={"start": "vanilla"}, points=({**PAPER_RECIPE, "schedule": "paper_vanilla"},)),
    ),
    num_samples=2,
    plan="paper",
    test_sets=("test_en",),
    fold_language="en",
    presets={"tiny": tiny},
)
