"""The text-only model of the paper (section 6): a text encoder, mean pooling, the paper's head.

    <dir>/encoder/           the encoder and its tokenizer (save_pretrained layout)
    <dir>/head.safetensors   the classification head
    <dir>/text_model.json    kind, labels, head dropout, max_length

No tokenizer can be downloaded here: `build_tiny_text_encoder` trains a small WordPiece tokenizer
on a corpus's own transcripts and saves it beside a random BertConfig model (tests, `tiny` preset).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from shards.reader import ShardReader
from workers.core.heads import ClassificationHead, masked_mean
from workers.text.config import TEXT_MODEL_FILE, TEXT_MODEL_KIND

MODEL_KIND = TEXT_MODEL_KIND
ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"
MODEL_FILE = TEXT_MODEL_FILE
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TextClassifier(nn.Module):
    """encoder -> mean over real tokens (padding masked out) -> dense, tanh, dropout, projection."""

    def __init__(
        self, encoder: nn.Module, tokenizer, labels: tuple[str, ...], head_dropout: float = 0.1, max_length: int = 64
    ):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.labels = tuple(labels)  # the corpus's label set (ShardReader.labels): one output each
        self.head = ClassificationHead(encoder.config.hidden_size, len(labels), head_dropout)

    def tokenize(self, texts: list[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(masked_mean(hidden, attention_mask))


def build_text_model(source: str, labels: tuple[str, ...], head_dropout: float, max_length: int) -> TextClassifier:
    """A hub id or a directory holding both the encoder and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    encoder = AutoModel.from_pretrained(source, add_pooling_layer=False)
    return TextClassifier(encoder, tokenizer, labels, head_dropout, max_length)


def build_tiny_text_encoder(directory: str | Path, texts: list[str], seed: int = 0, vocab_size: int = 400) -> Path:
    """A random 2-layer BERT (hidden 32) and a WordPiece tokenizer trained on `texts`, saved to `directory`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    directory = Path(directory)
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    wrapped.save_pretrained(directory)
    return directory


def read_transcripts(reader: ShardReader) -> np.ndarray:
    """The `transcript` column of every clip, in the reader's row order (shards, then record batches)."""
    import pyarrow as pa

    columns = []
    for entry in reader.manifest["shards"]:
        shard = pa.ipc.open_file(pa.memory_map(str(reader.data_dir / entry["path"]), "r"))
        for batch_number in range(shard.num_record_batches):
            columns.append(shard.get_batch(batch_number).column("transcript").to_numpy(zero_copy_only=False))
    transcripts = np.concatenate(columns).astype(str) if columns else np.array([], dtype=str)
    if len(transcripts) != len(reader):
        raise RuntimeError(f"{reader.data_dir}: {len(transcripts)} transcripts for {len(reader)} clips")
    return transcripts


def save_text_model(model: TextClassifier, directory: str | Path, state_dict: dict | None = None) -> Path:
    directory = Path(directory)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    model.encoder.save_pretrained(directory / ENCODER_DIR)
    model.tokenizer.save_pretrained(directory / ENCODER_DIR)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, str(directory / HEAD_FILE)
    )
    description = {
        "kind": MODEL_KIND,
        "labels": list(model.labels),
        "head_dropout": model.head.dropout.p,
        "max_length": model.max_length,
    }
    (directory / MODEL_FILE).write_text(json.dumps(description, indent=1))
    return directory


def is_text_model_dir(directory: str | Path) -> bool:
    return (Path(directory) / MODEL_FILE).exists() and (Path(directory) / HEAD_FILE).exists()


def load_text_model(directory: str | Path) -> TextClassifier:
    directory = Path(directory)
    if not is_text_model_dir(directory):
        raise FileNotFoundError(f"{directory} is not a saved text model (needs {MODEL_FILE} and {HEAD_FILE})")
    description = json.loads((directory / MODEL_FILE).read_text())
    model = build_text_model(
        str(directory / ENCODER_DIR),
        tuple(description["labels"]),
        description["head_dropout"],
        description["max_length"],
    )
    model.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
    return model.eval()


@torch.no_grad()
def predict_text(model: TextClassifier, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Class probabilities (in `model.labels` order) for each text."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        logits = model(**model.tokenize(texts[start : start + batch_size], device))
        chunks.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, len(model.labels)))


def load_saved_model(directory: Path):
    """The saved-model interface of workers.kinds: a text model cannot answer from audio."""
    raise ValueError(f"{directory} is a text model: it reads transcripts, not audio, so predict cannot use it")
