"""The peer: what a researcher writes instead, HF Trainer + `hyperparameter_search(backend="ray")`.

    python -m bench.peer_trainer --out result.json     (bench/peer.py runs it as its own process)

Same work as `python -m orchestrator.sweep smoke --set schedule=full`: the demo corpus, speakers
0011-0014 for training with the same 10 % of clips held out for validation, the smoke sweep's tiny
encoder (with the trial's encoder regularisation), convolutional front end frozen, batch 8, evaluation
every 15 steps, 8 epochs, a grid of the same two learning rates, one CPU per trial; the held-out
speaker 0015 is evaluated at the end of each trial.

Written as a user would (a torch Dataset, a collate function, `model_init`), plus the workarounds
this stack needed; each is listed in WORKAROUNDS and printed by the benchmark.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

LEARNING_RATES = (1e-3, 2e-3)  # search_spaces/smoke.py
# The 8-trial size of `python -m bench peer` (search_spaces/smoke.py's preset `peer8`): these around the two.
LEARNING_RATES_8 = (5e-4, 7e-4, 1e-3, 1.4e-3, 2e-3, 2.8e-3, 4e-3, 5.6e-3)
TRAIN_SPEAKERS = ("0011", "0012", "0013", "0014")
TEST_SPEAKER = "0015"
BATCH_SIZE = 8
EVAL_EVERY_STEPS = 15
EPOCHS = 8  # the `full` schedule (2 epochs) x the smoke sweep's epoch_scale 4
VAL_FRACTION = 0.1
SEED = 0

WORKAROUNDS = (
    "set trainer.model, trainer.model_wrapped and trainer.callback_handler.model to None before "
    "hyperparameter_search: Ray pickles the whole Trainer, and the weight-norm positional conv of Wav2Vec2 "
    "does not pickle ('Serialization of parametrized modules is only supported through state_dict()')",
    "no group_by_length (transformers 5.24's TrainingArguments has none): batches are padded to their longest clip",
    "held-out accuracy: a TrainerCallback evaluates the test speaker at on_train_end and writes it to a file "
    "(hyperparameter_search returns only the best run's objective and hyperparameters)",
    "save_strategy='no': HF's Ray backend would otherwise write a full checkpoint (model, optimizer, scheduler) "
    "to Tune at every evaluation round; so no best-state restore at the end (the project restores its best)",
)


class Clips(torch.utils.data.Dataset):
    def __init__(self, reader, rows: np.ndarray):
        self.reader = reader
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        audio = self.reader.audio(row).astype(np.float32) / 32768.0
        return {"audio": audio, "label": int(self.reader.index.label[row])}


def make_collate(feature_extractor):
    def collate(items: list[dict]) -> dict:
        batch = feature_extractor(
            [item["audio"] for item in items],
            sampling_rate=16000,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        batch["labels"] = torch.tensor([item["label"] for item in items])
        return dict(batch)

    return collate


def peer_model_config():
    """The project's tiny encoder with the regularisation its trials set (TrialConfig's defaults)."""
    from workers.finetune.config import TrialConfig
    from workers.finetune.model import tiny_encoder_config, with_overrides

    config = with_overrides(tiny_encoder_config(), TrialConfig().encoder_overrides())
    config.num_labels = 5
    return config


def held_out_callback(test: Clips, collate, out_dir: Path):
    from transformers import TrainerCallback

    class HeldOutAccuracy(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_train_end(self, args, state, control, model=None, **kwargs):
            train_seconds = time.perf_counter() - self.started
            test_started = time.perf_counter()
            model.eval()
            correct = 0
            with torch.no_grad():
                for start in range(0, len(test), 16):
                    batch = collate([test[i] for i in range(start, min(start + 16, len(test)))])
                    logits = model(batch["input_values"], attention_mask=batch["attention_mask"]).logits
                    correct += int((logits.argmax(-1) == batch["labels"]).sum())
            record = {
                "learning_rate": args.learning_rate,
                "test_accuracy": correct / len(test),
                "train_seconds": train_seconds,
                "test_seconds": time.perf_counter() - test_started,
                "steps": state.global_step,
            }
            (out_dir / f"lr{args.learning_rate:g}.json").write_text(json.dumps(record))

    return HeldOutAccuracy()


def training_arguments(out_dir: Path):
    """The smoke sweep's work in Trainer's terms: batch 8, evaluation every 15 steps, 8 epochs, one CPU."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out_dir / "trainer"),
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=16,
        num_train_epochs=EPOCHS,
        eval_strategy="steps",
        eval_steps=EVAL_EVERY_STEPS,
        logging_steps=EVAL_EVERY_STEPS,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=SEED,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def trial_clock():
    """A Tune callback noting, on the driver, when each trial starts and ends (wall clock, epoch seconds)."""
    from ray import tune

    class TrialClock(tune.Callback):
        def __init__(self):
            self.started: dict[str, float] = {}
            self.ended: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended[trial.trial_id] = time.time()

    return TrialClock()


def trial_records(best, out_dir: Path, num_train_clips: int, clock) -> list[dict]:
    """Per grid point: the held-out accuracy the callback wrote, with Tune's wall and val accuracy."""
    trials = []
    for trial in best.run_summary.trials:
        lr = trial.config["learning_rate"]
        record = json.loads((out_dir / f"lr{lr:g}.json").read_text())
        record.update(
            trial_seconds=trial.last_result.get("time_total_s"),
            trial_wall=clock.ended.get(trial.trial_id, 0.0) - clock.started.get(trial.trial_id, 0.0),
            val_accuracy=trial.last_result.get("eval_accuracy"),
            train_clips=EPOCHS * num_train_clips,
        )
        trials.append(record)
    return trials


def run(out_dir: Path, storage: Path, learning_rates: tuple[float, ...] = LEARNING_RATES) -> dict:
    from ray import tune
    from transformers import Trainer, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    from orchestrator.paths import ensure_demo_corpus
    from shards.batching import holdout
    from shards.reader import ShardReader

    reader = ShardReader(ensure_demo_corpus(0, log=lambda *_: None))
    train_rows, val_rows = holdout(reader.index, reader.index.select(TRAIN_SPEAKERS), VAL_FRACTION, SEED)
    train, val = Clips(reader, train_rows), Clips(reader, val_rows)
    test = Clips(reader, reader.index.select([TEST_SPEAKER]))
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )
    collate = make_collate(feature_extractor)
    config = peer_model_config()

    def model_init(trial=None):
        model = Wav2Vec2ForSequenceClassification(config)
        model.freeze_feature_encoder()
        return model

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model_init=model_init,
        args=training_arguments(out_dir),
        train_dataset=train,
        eval_dataset=val,
        data_collator=collate,
        compute_metrics=accuracy,
        callbacks=[held_out_callback(test, collate, out_dir)],
    )
    # Workaround: Ray pickles the whole Trainer; a built Wav2Vec2 does not pickle.
    trainer.model = trainer.model_wrapped = trainer.callback_handler.model = None
    started = time.perf_counter()
    clock = trial_clock()
    best = trainer.hyperparameter_search(
        hp_space=lambda _: {"learning_rate": tune.grid_search(list(learning_rates))},
        backend="ray",
        direction="maximize",
        n_trials=1,  # grid points run once each
        compute_objective=lambda metrics: metrics["eval_accuracy"],
        resources_per_trial={"cpu": 1},
        storage_path=str(storage),
        verbose=0,
        callbacks=[clock],  # passed on to tune.run
    )
    search_seconds = time.perf_counter() - started
    return {
        "search_seconds": search_seconds,
        "first_trial_started": min(clock.started.values()),  # epoch seconds; the benchmark subtracts process start
        "best_learning_rate": best.hyperparameters["learning_rate"],
        "trials": trial_records(best, out_dir, len(train), clock),
        "workarounds": list(WORKAROUNDS),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_trainer", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the result")
    parser.add_argument(
        "--learning-rates", type=float, nargs="+", default=list(LEARNING_RATES), help="the grid (one trial each)"
    )
    args = parser.parse_args(argv)
    import psutil

    process_started = psutil.Process().create_time()
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        result = run(Path(tmp), Path(tmp) / "ray_results", tuple(args.learning_rates))
    result["driver_startup_seconds"] = result["first_trial_started"] - process_started
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
