"""The MLflow vocabulary: every tag name, metric key and artifact name the project writes or reads.

One place owns them, so the driver (orchestrator/), the trial (workers/) and the readers of
results (report, predict) can never disagree on a spelling. Import-light: plain strings only.
"""

from __future__ import annotations


class Tag:
    """Run tags. Child (trial) runs and parent (sweep) runs share some names."""

    PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: a child run's parent
    # Which trial a child run belongs to (a restored trial finds its run instead of duplicating it)
    TRIAL_ID = "trial_id"
    TRIAL_STATE = "trial_state"  # 'running', then 'completed' once run_trial returned
    SCENARIO = "scenario"
    CONFIG_ID = "config_id"  # same for every fold of one configuration
    FOLD = "fold"
    START = "start"
    TRAIN_SPEAKERS = "train_speakers"
    TEST_SPEAKERS = "test_speakers"
    DATA_HASH = "data_hash"
    ERROR = "error"
    LAST_ERROR = "last_error"
    RETRIES = "retries"
    STOPPED_EARLY = "stopped_early"
    ORPHAN = "orphan"
    STARTED_AT = "started_at"
    ENDED_AT = "ended_at"
    DEVICE = "device"
    WEIGHTS = "weights"
    COMPILE = "compile"
    # Baseline trials (workers.features_trial, workers.text_trial)
    MODEL_KIND = "model_kind"  # 'acoustic_features' or 'text'; absent on fine-tuning trials
    ACOUSTIC_FEATURES = "acoustic_features"  # '<feature set>: hit' or ': computed' (the functionals table)
    # Parent (sweep) runs
    SWEEP = "sweep"
    SWEEP_DIR = "sweep_dir"
    GIT_COMMIT = "git_commit"
    COMMAND = "command"
    DATA_DIR = "data_dir"
    PRESET = "preset"
    FOLDS = "folds"
    INIT_FROM = "init_from"
    RESUMED = "resumed"
    BEST_TRIAL_ID = "best_trial_id"


class TrialState:
    """Values of Tag.TRIAL_STATE."""

    RUNNING = "running"
    COMPLETED = "completed"
