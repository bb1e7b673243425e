"""The recipe does what the paper's recipe says: freeze schedule, adaptive lr, early stopping, best state,
resume from a checkpoint, and a frozen-feature cache that changes nothing but the speed."""

import json

import numpy as np
import pytest
import torch

import workers.finetune.recipe as recipe
from workers.core.reporting import ListReporter
from workers.core.tracking import NullLogger
from workers.finetune.checkpoint import TRAIN_STATE_FILE
from workers.finetune.config import TRAINABLE_PARTS, TrialConfig
from workers.finetune.recipe import TrainState, record_evaluation, run_trial, setup, stage_steps, train_stage
from workers.vocabulary import Key

CPU = torch.device("cpu")
NO_REGULARISATION = dict(
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
    head_dropout=0.0,
)


class RecordingLogger(NullLogger):
    def __init__(self):
        self.metrics: list[tuple[int, dict]] = []
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags):
        self.tags.update(tags)

    def rounds(self) -> list[tuple[int, dict]]:
        """Evaluation rounds, with their learning-curve values under their plain names (`val/loss`)."""
        prefix = Key.CURVE_PREFIX
        return [
            (step, {k.removeprefix(prefix).replace("_", "/", 1): v for k, v in m.items()})
            for step, m in self.metrics
            if Key.curve("train/lr") in m
        ]


def small_config(demo_dir, tmp_path, **overrides) -> TrialConfig:
    """Two training speakers (45 train / 15 val clips), batch 4: 12 steps an epoch."""
    values = dict(
        data_dir=str(demo_dir),
        train_speakers=("0011", "0012"),
        eval_sets={"test_en": ("0015",)},
        val_fraction=0.25,
        batch_size=4,
        eval_every_steps=2,
        prefetch_batches=2,
        feature_cache_dir=str(tmp_path / "features"),
    )
    values.update(overrides)
    return TrialConfig(**values)


def one_stage(part: str, epochs: float = 0.25, learning_rate: float = 1e-3, batch_size: int = 4) -> tuple[dict]:
    return ({"trainable": part, "epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size},)


def run_stages(cfg: TrialConfig, logger=None):
    trial = setup(cfg, logger or NullLogger(), CPU, None)
    while trial.state.stage_index < len(trial.stages):
        train_stage(trial, ListReporter())
    return trial


def changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)]


@pytest.mark.parametrize("part", TRAINABLE_PARTS)
def test_a_stage_trains_exactly_the_part_it_names(demo_dir, tmp_path, part):
    cfg = small_config(demo_dir, tmp_path, stages=one_stage(part), eval_every_steps=100)
    trial = setup(cfg, NullLogger(), CPU, None)
    before = {k: v.clone() for k, v in trial.model.state_dict().items()}
    train_stage(trial, ListReporter())
    after = trial.model.state_dict()
    cnn = changed(before, after, "encoder.feature_extractor.")
    projection = changed(before, after, "encoder.feature_projection.")
    transformer = changed(before, after, "encoder.encoder.layers.")
    head = changed(before, after, "head.")
    assert any(head)
    assert any(cnn) == (part == "all") and (not any(cnn) or all(cnn))
    assert any(projection) == (part in ("all_but_cnn", "all"))
    assert any(transformer) == (part != "head")


def test_the_learning_rate_drops_by_the_factor_after_more_than_patience_rising_rounds():
    cfg = TrialConfig(lr_decay_patience=2, lr_decay_factor=0.1)
    state = TrainState()
    # Rises:                  -    -    1     2     3 -> x0.1   fall  1    2    3 -> x0.1
    losses = [1.0, 0.9, 0.95, 1.0, 1.1, 0.7, 0.8, 0.9, 1.0, 1.05]
    scales = []
    for loss in losses:
        record_evaluation(state, cfg, loss, 0.5)
        scales.append(state.lr_scale)
    assert scales == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_early_stopping_counts_rounds_without_a_new_best():
    cfg = TrialConfig(early_stop_patience=2)
    state = TrainState()
    stopped = []
    for loss in [1.0, 0.8, 0.9, 0.85, 0.79, 0.8, 0.81, 0.82]:
        is_best = record_evaluation(state, cfg, loss, 0.5)
        stopped.append((is_best, state.stopped_early))
    assert stopped == [
        (True, False),
        (True, False),
        (False, False),
        (False, False),
        (True, False),
        (False, False),
        (False, False),
        (False, True),
    ]
    never = TrainState()
    for loss in [1.0, 2.0, 3.0, 4.0, 5.0]:
        record_evaluation(never, TrialConfig(early_stop_patience=0), loss, 0.5)
    assert not never.stopped_early


def test_a_real_run_decays_its_logged_learning_rate_exactly_when_val_loss_kept_rising(demo_dir, tmp_path):
    cfg = small_config(
        demo_dir,
        tmp_path,
        stages=one_stage("all_but_cnn", epochs=1.5, learning_rate=5e-3),
        eval_every_steps=1,
        lr_decay_patience=0,
    )
    logger = RecordingLogger()
    run_trial(cfg, logger, ListReporter(), device=CPU)
    rounds = logger.rounds()
    losses = [m["val/loss"] for _, m in rounds]
    rates = [m["train/lr"] for _, m in rounds]
    # An independent reading of the rule: after a round whose val loss rose more than 0 rounds in a row,
    # the next round trains at a tenth of the rate; otherwise at the same rate.
    decays, rising = 0, 0
    for k in range(1, len(rounds) - 1):
        rising = rising + 1 if losses[k] > losses[k - 1] else 0
        if rising > cfg.lr_decay_patience:
            assert rates[k + 1] == pytest.approx(rates[k] * 0.1)
            decays, rising = decays + 1, 0
        else:
            assert rates[k + 1] == pytest.approx(rates[k])
    assert decays >= 1 and rates[0] == pytest.approx(5e-3)


def test_a_stage_stops_early_and_the_next_stage_still_runs(demo_dir, tmp_path):
    stages = (
        *one_stage("all_but_cnn", epochs=3, learning_rate=5e-3),
        *one_stage("head", epochs=0.5, learning_rate=2e-4),
    )
    cfg = small_config(demo_dir, tmp_path, stages=stages, eval_every_steps=1, early_stop_patience=1)
    logger = RecordingLogger()
    final = run_trial(cfg, logger, ListReporter(), device=CPU)
    planned = sum(stage_steps(s, 45) for s in cfg.stage_list())
    assert final["step"] < planned
    assert any(m["train/lr"] == pytest.approx(2e-4) for _, m in logger.rounds())  # the head stage ran


def test_the_final_model_is_the_best_evaluated_state(demo_dir, tmp_path):
    cfg = small_config(
        demo_dir, tmp_path, stages=one_stage("all_but_cnn", epochs=1.5, learning_rate=5e-3), compile=True
    )  # compile is skipped on CPU, and says so
    logger = RecordingLogger()
    final = run_trial(cfg, logger, ListReporter(), device=CPU)
    val_losses = [m["val/loss"] for _, m in logger.rounds()]
    assert min(val_losses) < val_losses[-1], "the run should end past its best for this test to mean anything"
    assert final["val/loss"] == pytest.approx(min(val_losses), abs=1e-6)
    assert logger.tags["compile"] == "skipped: cpu"


def test_gradient_accumulation_leaves_the_maths_unchanged(demo_dir, tmp_path, monkeypatch):
    passes: list[tuple[int, int]] = []  # per optimizer step: (micro-batches, clips in them)
    step = recipe.train_step

    def counted_step(trial, source, optimizer, parameters, micro_batches):
        passes.append((len(micro_batches), sum(len(b.rows) for b in micro_batches)))
        return step(trial, source, optimizer, parameters, micro_batches)

    monkeypatch.setattr(recipe, "train_step", counted_step)

    def trained(accumulation):
        passes.clear()
        cfg = small_config(
            demo_dir,
            tmp_path,
            stages=one_stage("all_but_cnn", epochs=0.5),
            grad_accum_steps=accumulation,
            **NO_REGULARISATION,
        )
        return run_stages(cfg).model.state_dict(), list(passes)

    (whole, whole_passes), (split, split_passes) = trained(1), trained(3)
    # The same steps over the same clips (45 training clips, batch 4, half an epoch: 6 steps, one of
    # them the short remainder); accumulation splits each step into 3 micro-batches (fewer when the
    # step has fewer clips), without it every step is one pass.
    clips = [n for _, n in whole_passes]
    assert len(clips) == 6 and [n for _, n in split_passes] == clips
    assert [m for m, _ in whole_passes] == [1] * 6
    assert [m for m, _ in split_passes] == [min(3, n) for n in clips]
    for name, value in whole.items():
        torch.testing.assert_close(split[name], value, atol=2e-5, rtol=1e-4)


def test_the_frozen_feature_cache_trains_the_same_head(demo_dir, tmp_path):
    def head_after(cache: bool):
        cfg = small_config(
            demo_dir, tmp_path, schedule="head_only", epoch_scale=0.5, learning_rate=3e-3, cache_frozen_features=cache
        )
        logger = RecordingLogger()
        trial = run_stages(cfg, logger)
        return trial.model.head.state_dict(), logger

    uncached, uncached_log = head_after(False)
    cached, cached_log = head_after(True)
    cached_again, again_log = head_after(True)
    assert uncached_log.tags["feature_cache/stage0"].startswith("not used")
    assert cached_log.tags["feature_cache/stage0"] == "computed"
    assert again_log.tags["feature_cache/stage0"] == "hit"
    for name, value in uncached.items():
        torch.testing.assert_close(cached[name], value, atol=1e-5, rtol=1e-4)
        assert torch.equal(cached_again[name], cached[name])
    losses = lambda log: [m["val/loss"] for _, m in log.rounds()]  # noqa: E731
    assert losses(cached_log) == pytest.approx(losses(uncached_log), abs=1e-5)


def test_random_crops_keep_the_head_stage_on_audio(demo_dir, tmp_path):
    cfg = small_config(demo_dir, tmp_path, schedule="head_only", epoch_scale=0.1, max_seconds=0.5)
    logger = RecordingLogger()
    run_stages(cfg, logger)
    assert "random crops" in logger.tags["feature_cache/stage0"]


def record_step_rows(monkeypatch) -> dict[int, list]:
    """Wrap the real train_step to note which clips each optimizer step trained on."""
    seen: dict[int, list] = {}
    real_step = recipe.train_step

    def recording(trial, source, optimizer, parameters, micro_batches):
        seen[trial.state.step + 1] = [b.rows.tolist() for b in micro_batches]
        return real_step(trial, source, optimizer, parameters, micro_batches)

    monkeypatch.setattr(recipe, "train_step", recording)
    return seen


def test_a_resumed_trial_continues_at_the_checkpointed_step_and_stage(demo_dir, tmp_path, monkeypatch):
    cfg = small_config(
        demo_dir,
        tmp_path,
        schedule="paper_finer",
        learning_rate=2e-3,
        eval_every_steps=5,
        english_fraction=0.5,
        train_speakers=("0011", "0012", "0001"),
    )
    original_rows = record_step_rows(monkeypatch)
    reporter = ListReporter(checkpoint_root=tmp_path / "tune")
    original = run_trial(cfg, NullLogger(), reporter, device=CPU)
    checkpoints = [c for c in reporter.checkpoints[:-1] if c is not None]
    assert checkpoints, "the trial should report its best model during training"
    assert reporter.checkpoints[-1] is not None  # the final report carries the best model too
    saved = [json.loads((c / TRAIN_STATE_FILE).read_text()) for c in checkpoints]
    # The best state was found mid-epoch: resuming replans that epoch and skips what it had done,
    # then crosses into the next stage as the original did.
    position = max(i for i in range(len(saved)) if saved[i]["epoch_batches_done"] > 0)
    resume_at = saved[position]

    resumed_rows = record_step_rows(monkeypatch)
    logger = RecordingLogger()
    resumed = run_trial(cfg, logger, ListReporter(), device=CPU, resume_dir=checkpoints[position])
    first_step = resume_at["step"] + 1
    assert min(resumed_rows) == first_step
    assert {s: original_rows[s] for s in resumed_rows} == resumed_rows  # same clips, same order, same stage
    assert resumed["step"] == original["step"] and resumed["epoch"] == original["epoch"]
    first_round = min(step for step, _ in logger.rounds())
    assert first_round == -(-first_step // cfg.eval_every_steps) * cfg.eval_every_steps


def test_train_state_round_trips_through_json():
    state = TrainState.fresh(seed=3)
    state.step, state.stage_index, state.lr_scale, state.best_val_loss = 17, 1, 0.1, 0.42
    restored = TrainState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert (restored.step, restored.stage_index, restored.lr_scale, restored.best_val_loss) == (17, 1, 0.1, 0.42)
    a, b = np.random.default_rng(), np.random.default_rng()
    a.bit_generator.state, b.bit_generator.state = state.epoch_rng_state, restored.epoch_rng_state
    assert np.array_equal(a.integers(0, 1000, 10), b.integers(0, 1000, 10))


def test_weighted_layer_sum_with_layerdrop_is_refused():
    with pytest.raises(ValueError, match="layerdrop=0"):
        TrialConfig(pooling="weighted_sum", layerdrop=0.1)
    TrialConfig(pooling="weighted_sum", layerdrop=0.0)


def test_a_weighted_layer_sum_logs_its_learned_weights_as_a_bar_chart_and_metrics(demo_dir, tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient

    from workers.core.tracking import MlflowRunLogger
    from workers.vocabulary import Key

    client = MlflowClient(tracking_uri)
    run_id = client.create_run(client.create_experiment("layers")).info.run_id
    cfg = small_config(
        demo_dir,
        tmp_path,
        start="tiny_hubert",
        pooling="weighted_sum",
        stages=one_stage("all", epochs=0.5, learning_rate=1e-2),
        **NO_REGULARISATION,
    )
    final = run_trial(cfg, MlflowRunLogger(tracking_uri, run_id), ListReporter(), CPU)
    client.update_run(run_id, "FINISHED")
    logged = client.get_run(run_id).data.metrics
    weights = [logged[f"{Key.LAYER_WEIGHT_PREFIX}{i}"] for i in range(3)]  # embedding output + 2 layers
    assert weights == pytest.approx([final[f"{Key.LAYER_WEIGHT_PREFIX}{i}"] for i in range(3)])
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert len(set(weights)) > 1  # trained away from the uniform start
    assert f"{Key.LAYER_WEIGHT_PREFIX}3" not in logged
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert Key.LAYER_WEIGHTS_FIGURE in artifacts
    assert client.get_run(run_id).data.tags["encoder_family"] == "hubert"


def test_mean_pooling_logs_no_layer_weights(demo_dir, tmp_path):
    logger = RecordingLogger()
    cfg = small_config(demo_dir, tmp_path, stages=one_stage("head", epochs=0.25), eval_every_steps=100)
    final = run_trial(cfg, logger, ListReporter(), CPU)
    assert not [key for key in final if key.startswith("layer_weight/")]


def test_unknown_keys_are_still_named(demo_dir):
    with pytest.raises(ValueError, match="unknown config key 'grad_accumulation'; did you mean"):
        TrialConfig.from_dict({"data_dir": str(demo_dir), "grad_accumulation": 2})


def test_encoder_regularisation_is_written_into_the_encoder(demo_dir, tmp_path):
    cfg = small_config(
        demo_dir,
        tmp_path,
        hidden_dropout=0.25,
        attention_dropout=0.2,
        layerdrop=0.05,
        mask_time_prob=0.1,
        stages=one_stage("head", epochs=0.1),
    )
    encoder = setup(cfg, NullLogger(), CPU, None).model.encoder
    assert encoder.config.layerdrop == 0.05 and encoder.config.mask_time_prob == 0.1
    assert encoder.encoder.layers[0].dropout.p == 0.25  # dropout modules read the rate when built
    assert encoder.encoder.layers[0].attention.dropout == 0.2


def test_the_tune_trainable_resumes_from_the_checkpoint_tune_hands_it(demo_dir, tmp_path, monkeypatch):
    """Ray's session functions are stubbed (no Tune session in-process); trial.py and the recipe are real."""
    from types import SimpleNamespace

    from ray import tune

    from workers.trial import train_emotion

    cfg = small_config(
        demo_dir, tmp_path, stages=one_stage("all_but_cnn", epochs=2, learning_rate=1e-3), eval_every_steps=5
    )
    reporter = ListReporter(checkpoint_root=tmp_path / "tune")
    run_trial(cfg, NullLogger(), reporter, device=CPU)
    checkpoint = next(c for c in reporter.checkpoints if c is not None)
    resume_step = json.loads((checkpoint / TRAIN_STATE_FILE).read_text())["step"]

    reports = []
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(checkpoint)))
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(dict(metrics)))
    monkeypatch.setattr(
        tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t0", get_trial_name=lambda: "t0")
    )
    train_emotion(cfg.to_dict())
    assert 0 < resume_step < reports[0]["step"] and reports[-1]["step"] == reporter.reports[-1]["step"]
    assert "test_en/accuracy" in reports[-1]
