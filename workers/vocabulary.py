"""The MLflow vocabulary: every tag name, metric key and artifact name the project writes or reads.

One place owns them, so the driver (orchestrator/), the trial (workers/) and the readers of
results (report, predict) can never disagree on a spelling. Import-light: plain strings only.
"""

from __future__ import annotations


class Tag:
    """Run tags. Child (trial) runs and parent (sweep) runs share some names."""

    PARENT_RUN = "mlflow.parentRunId"  # MLflow's own: a child run's parent
    TRIAL_RUN = "trial"  # on a logged model: the name of the trial run it came from
    # MLflow's own source tags, on parent and child runs: the UI's Source column and its commit link
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"  # 'LOCAL' (MLflow's SourceType names)
    SOURCE_GIT_COMMIT = "mlflow.source.git.commit"
    # Which trial a child run belongs to (a restored trial finds its run instead of duplicating it)
    TRIAL_ID = "trial_id"
    TRIAL_STATE = "trial_state"  # 'running', then 'completed' once run_trial returned
    SCENARIO = "scenario"
    CONFIG_ID = "config_id"  # same for every fold of one configuration
    FOLD = "fold"
    NUM_FOLDS = "num_folds"  # folds every configuration runs on: a configuration ranks only once all finished
    START = "start"
    ENCODER_FAMILY = "encoder_family"  # the start's model_type (wav2vec2, hubert, wavlm, data2vec-audio, whisper)
    TRAIN_SPEAKERS = "train_speakers"
    TEST_SPEAKERS = "test_speakers"
    DATA_HASH = "data_hash"
    ERROR = "error"
    LAST_ERROR = "last_error"
    RETRIES = "retries"
    STOPPED_EARLY = "stopped_early"
    ORPHAN = "orphan"
    STARTED_AT = "started_at"  # the current attempt's start (epoch seconds): a tag, never a metric
    ENDED_AT = "ended_at"
    DEVICE = "device"
    WEIGHTS = "weights"
    COMPILE = "compile"
    # Which attempt of the trial is logging (1, 2, ... : Tune retries a failed trial from its last checkpoint).
    # A tag, not a metric: each attempt also leaves `attempt/<n>/started_at`, and a metric entry belongs to
    # the last attempt that started at or before its timestamp (orchestrator.results.attempt_at).
    ATTEMPT = "attempt"
    EVAL_BATCH_SIZE = "eval_batch_size"  # clips per evaluation batch used (eval_batch_size 0: sized by device)
    # Where a trial attempt ran
    HOST = "host"
    RAY_NODE_ID = "ray_node_id"  # the Ray node of the trial's process (rank 0's for a data-parallel trial)
    TRAIN_WORKER_NODES = "train_worker_nodes"  # a data-parallel trial: each rank's Ray node id, in rank order
    PID = "pid"
    CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
    # What a trial runs (a workers.kinds name: finetune, features, text); on parent and child runs
    TRIAL_KIND = "trial_kind"
    # Baseline trials (workers.acoustic.trial, workers.text.trial)
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

    # The training corpus's ordered label set, comma-joined (class i is the i-th): what the metrics'
    # `<set>/<label>/...` keys and the report's tables are named after.
    LABELS = "labels"

    # Class imbalance: 'angry 120, sad 30 (imbalance 4.0x)'. On a trial run: its training clips (after the
    # val holdout); on a parent run: the training speakers' clips of each distinct training set (folds: one
    # line each, 'fold: ...'). CLASS_WEIGHT_VALUES: the per-class weights of a weighted training loss.
    TRAIN_CLIPS_PER_CLASS = "train_clips_per_class"
    CLASS_WEIGHT_VALUES = "class_weight_values"

    # MLflow's own: the run's description (the run page's Description box), markdown
    NOTE = "mlflow.note.content"

    @staticmethod
    def attempt_started(attempt: int) -> str:
        """When attempt number `attempt` started (epoch seconds, 3 decimals)."""
        return f"attempt/{attempt}/started_at"

    @staticmethod
    def eval_data(set_name: str) -> str:
        """A held-out set from another corpus (--eval-data): '<shard dir>; <label map and clips left out>'."""
        return f"eval_data/{set_name}"

    @staticmethod
    def pbt_event(number: int) -> str:
        """Exploit/explore step `number` (1, 2, ...) of a PBT trial, as JSON:
        {"epoch": ..., "from_trial": ..., "values": {key: [old, new]}}."""
        return f"{Key.PBT_PREFIX}{number}"

    @staticmethod
    def feature_cache(stage_index: int) -> str:
        """Whether a head-only stage trained from cached features ('computed', 'hit' or 'not used: why')."""
        return f"feature_cache/stage{stage_index}"

    @staticmethod
    def frontend_cache(stage_index: int) -> str:
        """Whether a stage trained from the cached conv front end ('hit N clips', 'computed N clips, hit M',
        or 'not used: why')."""
        return f"frontend_cache/stage{stage_index}"


class ExperimentTag:
    """Experiment tags. MLflow 3's UI opens an experiment on its GenAI overview unless MLflow's own
    kind tag says it holds model training (value as in MLflow 3.17's UI bundle)."""

    KIND = "mlflow.experimentKind"
    MODEL_TRAINING = "custom_model_development"


class ServingColumn:
    """The columns of a served model (pyfunc): a clip per row in, the label and one probability per label out."""

    AUDIO = "audio"  # mono float samples in [-1, 1] at 16 kHz
    LABEL = "label"
    # A dimensional model (task 'dimensions' or 'both') also answers one column per dimension, named after it
    # (arousal, valence, dominance), on the training corpus's scale.


class DatasetContext:
    """The `mlflow.data.context` of a trial's dataset inputs: the split name (train, val, test_en, ...)."""

    TAG = "mlflow.data.context"


class Task:
    """Values of the `task` knob (fine-tuning and the features baseline): what a trial learns to predict."""

    KEY = "task"
    CATEGORICAL = "categorical"  # the corpus's classes (the default)
    DIMENSIONS = "dimensions"  # arousal, valence, dominance: a regression output per dimension
    BOTH = "both"  # both, on one shared encoder
    ALL = (CATEGORICAL, DIMENSIONS, BOTH)


class TrialState:
    """Values of Tag.TRIAL_STATE."""

    RUNNING = "running"
    COMPLETED = "completed"


class ConfigKey:
    """Config keys (every kind's config has them, and a trial run logs them as params) that say where a
    trial's data is and where it runs, not how it trains. The one list of what is not a recipe knob:
    the trial grid leaves PLAN and PLACE out of a configuration's id (every fold of one configuration
    shares it), and the report plots no key of NOT_KNOBS."""

    TRAIN_SPEAKERS = "train_speakers"
    EVAL_SETS = "eval_sets"
    DATA_DIR = "data_dir"
    NUM_THREADS = "num_threads"
    EXTRA_EVAL_DATA = "extra_eval_data"  # --eval-data: set name -> shard directory
    EVAL_LABEL_MAP = "eval_label_map"  # --eval-label-map: other corpus's label -> the training corpus's
    SEED = "seed"
    STAGES = "stages"
    # The speaker split: from the sweep's plan or a fold, or set by hand (--set; then no plan replaces it).
    PLAN = (TRAIN_SPEAKERS, EVAL_SETS)
    # Where the shards are, how many threads, which other corpora it is tested on: the same recipe anywhere.
    PLACE = (DATA_DIR, NUM_THREADS, EXTRA_EVAL_DATA, EVAL_LABEL_MAP)
    # Besides, a repetition (the seed) and an explicit schedule (a list of stages) are not knobs to plot.
    NOT_KNOBS = frozenset({*PLAN, *PLACE, SEED, STAGES})


# Appended for the driver and the readers of results (orchestrator/).
class SweepTag:
    """Parent (sweep) run tags that say how the sweep ranks its trials: the one best-trial rule reads them."""

    METRIC = "metric"  # e.g. val/accuracy
    MODE = "mode"  # max | min
    BEST_CONFIG_ID = "best_config_id"
    # What the sweep declares (search_spaces.SweepSpec), written at sweep start for the report:
    # its scenarios in the order it reports them, comma-joined (the pretrain base first) ...
    SCENARIOS = "scenarios"
    # ... and the config key that mixes languages in training ('english_fraction', 'source_fraction';
    # '': the sweep does not mix). Parent runs from before these tags: the report infers both.
    MIXING_KNOB = "mixing_knob"


class RunStatus:
    """MLflow's run statuses, as the driver sets and the readers compare them."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class Key:
    """Metric keys and artifacts the driver and the readers of results name."""

    # Per-set metrics are `<set>/<metric>` (set_metric): test_en/accuracy, val/loss, test_zh/<label>/f1.
    # Metric names of an evaluation set beside the registered per-set metrics' (workers.core.metrics):
    ACCURACY = "accuracy"
    LOSS = "loss"  # mean cross-entropy
    VAL_ACCURACY = "val/accuracy"  # the default selection metric: validation clips of the training speakers
    VAL_LOSS = "val/loss"  # the tie-break of the best-trial rule (lower is better)
    TRAIN_LOSS = "train/loss"  # mean over the steps since the last evaluation round (text: over the epoch)
    TRAIN_LR = "train/lr"
    EPOCH = "epoch"  # epochs finished in the whole trial
    STEP = "step"  # optimizer steps taken in the whole trial
    SETUP_SECONDS = "setup_seconds"
    TRIAL_SECONDS = "trial_seconds"
    FINAL_EVAL_SECONDS = "final_eval_seconds"  # inside trial_seconds: evaluating every set with the best model
    # Learning curves: one entry per evaluation round, step = the training step. Their own section
    # (`curve/`), so a run's Model metrics charts open on them; `val/accuracy`, `val/loss` and every other
    # `<set>/...` key are the final model's values, logged once and linked to the trial's logged model.
    CURVE_PREFIX = "curve/"
    TRAIN_CLIPS = "train/clips"  # final: clips trained on, linked to the logged model with the train dataset
    UAR = "uar"  # unweighted average recall (EmoBox's UA)
    CLASS_STATS = ("precision", "recall", "f1", "support")  # per class: `<set>/<label>/<stat>`
    TRIAL_ID = "trial_id"  # Tune's own, in every result it reports
    TRIAL_PREFIX = "trial/"  # per-attempt bookkeeping, not a result: left out of the parent's best/ copies
    BEST_PREFIX = "best/"  # parent-run copies of the best trial's metrics
    # A PBT trial's mutable values as metrics, step = the training step they apply from: `pbt/learning_rate`
    # (an MLflow param never changes: Ray issues 20473, 30649); its exploit steps are tags `pbt/<n>` (Tag.pbt_event).
    PBT_PREFIX = "pbt/"
    FOLDS_PREFIX = "folds/"  # parent-run fold statistics: folds/<config_id>/<set>/<stat>_mean|_std
    TRIALS_TABLE = "trials.txt"
    SUMMARY = "summary.txt"
    FOLDS_TABLE = "folds.txt"
    MODEL_DIR = "model"  # a trial's MLflow Model (pyfunc): MLmodel, and the transformers directory below
    # A LoRA trial's adapters (with pooler and head) on their base, beside the merged MLflow Model model/
    LORA_ADAPTERS_DIR = "lora_adapters"
    TRANSFORMERS_DIR = "transformers"  # inside model/: the save_pretrained directory (config.json, model.safetensors)
    # Per held-out set from another corpus: clips left out because their label maps to none of the
    # training corpus's (`<set>/unmapped_clips`).
    UNMAPPED_CLIPS = "unmapped_clips"

    # The final metrics of an evaluation set linked to the trial's logged model (`<set>/<name>`): the
    # Models tab's columns. Per-emotion rows and timings stay on the run.
    MODEL_METRICS = ("accuracy", "uar", "macro_f1", "weighted_f1", "loss", "ece", "ccc")

    @staticmethod
    def linked_to_model(key: str) -> bool:
        """Whether a final metric is linked to the logged model (its set's headline numbers, train/clips)."""
        return key == Key.TRAIN_CLIPS or (key.count("/") == 1 and key.split("/")[1] in Key.MODEL_METRICS)

    @staticmethod
    def model_column_order(key: str) -> tuple[int, int]:
        """Sort key: linked metrics first, each set's in MODEL_METRICS order (accuracy first), the rest after."""
        if not Key.linked_to_model(key) or key == Key.TRAIN_CLIPS:
            return (1, 0) if key == Key.TRAIN_CLIPS else (2, 0)
        return (0, Key.MODEL_METRICS.index(key.split("/")[1]))

    @staticmethod
    def curve(name: str) -> str:
        """The learning-curve key of a per-round value: `train/loss` -> `curve/train_loss`."""
        return Key.CURVE_PREFIX + name.replace("/", "_")

    @staticmethod
    def set_metric(set_name: str, metric: str) -> str:
        """A metric of one evaluation set: `<set>/<metric>` (e.g. test_en/uar, val/loss, test_en/angry/f1)."""
        return f"{set_name}/{metric}"

    @staticmethod
    def accuracy(set_name: str) -> str:
        """`<set>/accuracy`: logged for every evaluation set once a trial has evaluated it (a trial's final report)."""
        return Key.set_metric(set_name, Key.ACCURACY)

    @staticmethod
    def confusion_matrix(set_name: str) -> str:
        """A trial's artifact: the confusion matrix figure of one evaluation set."""
        return f"confusion_matrix_{set_name}.png"

    @staticmethod
    def reliability(set_name: str) -> str:
        """A trial's artifact: the reliability diagram (calibration) of one evaluation set."""
        return f"reliability_{set_name}.png"

    @staticmethod
    def classification_report(set_name: str, extension: str = "json") -> str:
        """A trial's artifact: sklearn's classification report on one evaluation set (.json dict, .txt table)."""
        return f"classification_report_{set_name}.{extension}"

    # Dimensional emotion (task 'dimensions' or 'both'): `<set>/<dimension>/ccc|pcc|mae` per dimension
    # (arousal, valence, dominance) and `<set>/ccc`, the mean CCC over the dimensions (what such a sweep ranks by).
    CCC = "ccc"  # Lin's concordance correlation coefficient (the MSP-Podcast challenge's attribute score)
    PCC = "pcc"  # Pearson's correlation
    MAE = "mae"  # mean absolute error, on the corpus's scale
    DIMENSION_STATS = (CCC, PCC, MAE)
    VAL_CCC = "val/ccc"  # a dimensional sweep's selection metric

    @staticmethod
    def dimension_metric(set_name: str, dimension: str, stat: str) -> str:
        """One dimension's score on one set: `<set>/<dimension>/<stat>` (test_en/arousal/ccc)."""
        return f"{set_name}/{dimension}/{stat}"

    @staticmethod
    def dimension_predictions(set_name: str) -> str:
        """A trial's artifact: true and predicted values of each clip of a set, per dimension (the report's scatter)."""
        return f"dimension_predictions_{set_name}.json"

    # pooling='weighted_sum': the learned softmax weight of each hidden state (0: embedding output)
    LAYER_WEIGHT_PREFIX = "layer_weight/"
    LAYER_WEIGHTS_FIGURE = "layer_weights.png"
    REPORT_DIR = "report"  # the parent run's folder of the sweep report (report.md, report.html, images/)

    # Per evaluation set (val, test_en, ...): `<set>/<stat>` with one of these stats
    ACCURACY = "accuracy"
    MACRO_F1 = "macro_f1"
    ECE = "ece"  # expected calibration error

    @staticmethod
    def of_set(set_name: str, stat: str) -> str:
        """A per-set metric key: `<set>/<stat>` (test_en/accuracy, val/macro_f1)."""
        return f"{set_name}/{stat}"


def trial_run_name(trial_id: str, label: str) -> str:
    """A trial's MLflow run name: its index in the sweep (Tune's `<experiment>_<index>`) and its label
    (the values it varies, its scenario and fold: orchestrator.run_notes.variant_label)."""
    index = trial_id.rsplit("_", 1)[-1]
    return f"{index} {label}".strip() if label else trial_id
