"""The Tune function trainable: turns a Tune config into a typed TrialConfig and runs the recipe.

Kept import-light (torch loads inside the function) so the driver can import it cheaply.
"""
from __future__ import annotations

# Config keys that are about where results go, not about the recipe.
TRACKING_KEY = "tracking"
TAGS_KEY = "tags"


def train_emotion(config: dict) -> None:
    from ray import tune

    from workers.config import TrialConfig
    from workers.recipe import run_trial
    from workers.reporting import TuneReporter
    from workers.tracking import MlflowRunLogger, NullLogger, TrackingTarget

    context = tune.get_context()
    recipe_values = {k: v for k, v in config.items() if k not in (TRACKING_KEY,)}
    trial_config = TrialConfig.from_dict(recipe_values)
    tracking = config.get(TRACKING_KEY)
    if tracking:
        logger = MlflowRunLogger.for_trial(
            TrackingTarget.from_dict(tracking), context.get_trial_id(), run_name=context.get_trial_name()
        )
    else:
        logger = NullLogger()
    # A restored trial (sweep restore, or a retry after a crash) continues from its last checkpoint:
    # the best model so far and the train_state.json saying where training was.
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        run_trial(trial_config, logger, TuneReporter())
        return
    with checkpoint.as_directory() as resume_dir:
        run_trial(trial_config, logger, TuneReporter(), resume_dir=resume_dir)
