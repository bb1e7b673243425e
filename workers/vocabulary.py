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
    EVAL_BATCH_SIZE = "eval_batch_size"  # clips per evaluation batch used (eval_batch_size 0: sized by device)
    # Where a trial attempt ran
    HOST = "host"
    PID = "pid"
    CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
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

    @staticmethod
    def feature_cache(stage_index: int) -> str:
        """Whether a head-only stage trained from cached features ('computed', 'hit' or 'not used: why')."""
        return f"feature_cache/stage{stage_index}"


class TrialState:
    """Values of Tag.TRIAL_STATE."""

    RUNNING = "running"
    COMPLETED = "completed"


# Appended for the driver and the readers of results (orchestrator/).
class SweepTag:
    """Parent (sweep) run tags that say how the sweep ranks its trials: the one best-trial rule reads them."""

    METRIC = "metric"  # e.g. val/accuracy
    MODE = "mode"  # max | min
    BEST_CONFIG_ID = "best_config_id"


class RunStatus:
    """MLflow's run statuses, as the driver sets and the readers compare them."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class Key:
    """Metric keys and artifacts the driver and the readers of results name."""

    VAL_ACCURACY = "val/accuracy"  # the default selection metric: validation clips of the training speakers
    VAL_LOSS = "val/loss"  # the tie-break of the best-trial rule (lower is better)
    TRIAL_SECONDS = "trial_seconds"
    BEST_PREFIX = "best/"  # parent-run copies of the best trial's metrics
    FOLDS_PREFIX = "folds/"  # parent-run fold statistics: folds/<config_id>/<set>/<stat>_mean|_std
    TRIALS_TABLE = "trials.txt"
    SUMMARY = "summary.txt"
    FOLDS_TABLE = "folds.txt"
    MODEL_DIR = "model"
