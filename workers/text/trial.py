"""The text-only baseline (the paper's section 6, Table 6): a text encoder fine-tuned on the transcripts.

ESD speaks the same sentences in every emotion, so the paper's multilingual BERT scored at chance
(0.20): this trial is the check that the audio models learn from how things are said, not what.
Same speaker split, metric set, logger and reporter as the fine-tuning trial; one Tune report per
epoch (val loss and accuracy), the best epoch's model (lowest val loss) is evaluated and saved.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shards.reader import open_reader
from workers.core.evaluation import evaluate_set, mean_cross_entropy
from workers.core.reporting import Reporter
from workers.core.run_note import split_note
from workers.core.split import SpeakerSplit, split_rows
from workers.core.tracking import RunLogger
from workers.text.config import TINY_ENCODER, TextConfig
from workers.text.model import (
    MODEL_KIND,
    TextClassifier,
    build_text_model,
    build_tiny_text_encoder,
    predict_text,
    read_transcripts,
    save_text_model,
)
from workers.vocabulary import Key, Tag

__all__ = ["TINY_ENCODER", "TextConfig", "run_text_trial"]


def require_transcripts(transcripts: np.ndarray, utterance_ids: np.ndarray, data_dir: str) -> None:
    """A clear error when clips the trial uses have no transcript."""
    missing = np.flatnonzero(np.char.str_len(np.char.strip(transcripts.astype(str))) == 0)
    if len(missing):
        examples = ", ".join(utterance_ids[missing[:3]])
        raise ValueError(
            f"{len(missing)} of {len(transcripts)} clips this text trial uses have no transcript "
            f"(e.g. {examples}) in {data_dir}; the text baseline needs the `transcript` column: ingest the "
            "corpus with its transcript files"
        )


def run_text_trial(cfg: TextConfig, logger: RunLogger, reporter: Reporter) -> dict[str, float]:
    """Fine-tune the text encoder and head; return the final metrics (also logged and reported)."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, cfg.num_threads))
    torch.manual_seed(cfg.seed)
    reader = open_reader(cfg.data_dir)
    split = split_rows(reader, cfg.train_speakers, cfg.eval_sets, cfg.val_fraction, cfg.seed)
    transcripts = read_transcripts(reader)
    used = np.concatenate([split.train_rows, *split.eval_rows.values()])
    require_transcripts(transcripts[used], reader.index.utterance_id[used], cfg.data_dir)
    labels = reader.index.label
    with tempfile.TemporaryDirectory(prefix="emotion-text-") as tmp:
        model = setup_model(cfg, transcripts[split.train_rows], reader.labels, Path(tmp))
        logger.log_params(cfg.to_dict())
        logger.set_tags(
            {
                Tag.MODEL_KIND: MODEL_KIND,
                Tag.DATA_HASH: reader.content_hash,
                Tag.TRAIN_SPEAKERS: ",".join(cfg.train_speakers),
                Tag.LABELS: ",".join(reader.labels),
                Tag.NOTE: split_note(f"the text baseline (`{cfg.encoder}` on transcripts)", cfg, split),
            }
        )
        setup_seconds = time.perf_counter() - started
        step = train(cfg, model, split, transcripts, labels, logger, reporter)
        final: dict[str, float] = {}
        for name, rows in split.eval_rows.items():
            probabilities = predict_text(model, list(transcripts[rows]), cfg.eval_batch_size)
            final.update(evaluate_set(logger, name, labels[rows], probabilities, reader.labels))
        final.update(
            {
                Key.EPOCH: cfg.epochs,
                Key.STEP: step,
                Key.SETUP_SECONDS: setup_seconds,
                Key.TRIAL_SECONDS: time.perf_counter() - started,
            }
        )
        logger.log_metrics(final, step=step)
        model_dir = save_text_model(model, Path(tmp) / "model")
        logger.log_artifacts(str(model_dir), "model")
        reporter.report(final, checkpoint_dir=model_dir)
    return final


def setup_model(
    cfg: TextConfig, train_transcripts: np.ndarray, labels: tuple[str, ...], scratch: Path
) -> TextClassifier:
    """The encoder and head, on the trial's GPU when it was given one (Tune sets CUDA_VISIBLE_DEVICES)."""
    source = cfg.encoder
    if source == TINY_ENCODER:
        source = str(build_tiny_text_encoder(scratch / "tiny-encoder", list(train_transcripts), seed=cfg.seed))
    model = build_text_model(source, labels, cfg.head_dropout, cfg.max_length)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def train(
    cfg: TextConfig,
    model: TextClassifier,
    split: SpeakerSplit,
    transcripts: np.ndarray,
    labels: np.ndarray,
    logger: RunLogger,
    reporter: Reporter,
) -> int:
    """`cfg.epochs` epochs of AdamW; keeps the epoch with the lowest val loss. Returns the steps taken."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    val_rows = split.eval_rows.get("val", split.train_rows[:0])
    best_loss, best_state, step = np.inf, None, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(split.train_rows)
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            device = next(model.parameters()).device
            logits = model(**model.tokenize(list(transcripts[rows]), device))
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels[rows]).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        progress = {Key.EPOCH: epoch, Key.STEP: step, Key.TRAIN_LOSS: float(np.mean(losses))}
        if len(val_rows):
            probabilities = predict_text(model, list(transcripts[val_rows]), cfg.eval_batch_size)
            progress[Key.VAL_LOSS] = mean_cross_entropy(labels[val_rows], probabilities)
            progress[Key.VAL_ACCURACY] = float(np.mean(probabilities.argmax(axis=1) == labels[val_rows]))
            if progress[Key.VAL_LOSS] < best_loss:
                best_loss = progress[Key.VAL_LOSS]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        logger.log_metrics({Key.curve(k): v for k, v in progress.items() if "/" in k}, step=step)  # learning curves
        if epoch < cfg.epochs:
            reporter.report(progress)  # the last epoch's report is the final one, with the test sets
    if best_state is not None:
        model.load_state_dict(best_state)
    return step
