"""The paper's model: a speech encoder (wav2vec2 or another family, workers.finetune.encoders), pooling over valid
frames, and a small head."""

from __future__ import annotations

import copy
import json
import math
from collections import OrderedDict
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
)
from transformers import initialization as hf_init
from transformers.modeling_outputs import SequenceClassifierOutput

from shards.schema import EMOTIONS
from workers.core.heads import ClassificationHead, masked_mean
from workers.finetune import encoders
from workers.finetune.config import RANDOM_STARTS, START_MODELS, TRAINABLE_PARTS, check_pooling
from workers.finetune.encoders.loading import config_from_dict, load_config, load_pretrained_encoder
from workers.finetune.encoders.lora import add_lora
from workers.finetune.encoders.parts import unfreeze_encoder_part
from workers.finetune.encoders.waveform import tiny_encoder_config, xlsr53_encoder_config  # noqa: F401 (old home)
from workers.finetune.encoders.waveform.forward import encode_waveform, normalize_audio  # noqa: F401 (old home)
from workers.finetune.encoders.waveform.frames import encode_frames
from workers.finetune.hub.modeling_emotion_sweep import waveform_inputs, whisper_inputs

# Starts built from a config with random weights (no download), as the encoder families declare them.
CONFIG_STARTS = RANDOM_STARTS


def with_overrides(config: PretrainedConfig, overrides: dict | None) -> PretrainedConfig:
    """A copy of `config` with the trial's regularisation, under the family's own config names."""
    config = copy.deepcopy(config)
    for name, value in encoders.regularisation_overrides(config, overrides).items():
        setattr(config, name, value)
    return config


def build_encoder(
    start: str | PretrainedConfig, overrides: dict | None = None, *, revision: str = "", weights_dir: str = ""
) -> nn.Module:
    """An encoder from a config, a named start, a hub id or a local directory.

    `overrides` (TrialConfig.encoder_overrides()) are written into the config before the model is
    built: dropout modules read their rate at construction. A CTC checkpoint (e.g. the 'finer'
    start) loads into Wav2Vec2Model without its CTC head; any family of workers.finetune.encoders loads its bare
    encoder the same way (Whisper: without its decoder). Pretrained weights are kept in this
    process (PRETRAINED), so a reused Tune actor builds its next trial without reading them again.
    """
    if isinstance(start, PretrainedConfig):
        config = with_overrides(start, overrides)
        return encoders.family_of(config).build(config)
    if start in CONFIG_STARTS:
        config = with_overrides(CONFIG_STARTS[start](), overrides)
        return encoders.family_of(config).build(config)
    return PRETRAINED.build(resolve_start(start), overrides, revision=revision, weights_dir=weights_dir)


def resolve_start(start: str) -> str:
    """A named start's hub id; a local directory as an absolute path; anything else as given (a hub id)."""
    source = START_MODELS.get(start, start)
    if Path(source).exists():
        return str(Path(source).resolve())
    return source


class PretrainedWeights:
    """Loaded encoder weights kept in memory (CPU), keyed by source, revision and weights dir.

    Holds at most `capacity` checkpoints (~1.3 GB each for XLSR-53) so a sweep over a couple of
    starts on a reused worker loads each once. Models get copies: training never touches the cache.
    """

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self._entries: OrderedDict[tuple, tuple[PretrainedConfig, dict]] = OrderedDict()
        self.hits = 0
        self.loads = 0

    def build(self, source: str, overrides: dict | None, revision: str = "", weights_dir: str = "") -> nn.Module:
        key = (source, revision, str(Path(weights_dir).resolve()) if weights_dir else "")
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            base_config, weights = self._entries[key]
            model = _model_from_weights(with_overrides(base_config, overrides), weights)
            model.pretrained_source = pretrained_source(source, revision, base_config)
            return model
        model, base_config = _load_pretrained(source, overrides, revision, weights_dir)
        model.pretrained_source = pretrained_source(source, revision, base_config)
        self.loads += 1
        self._entries[key] = (base_config, {k: v.detach().clone() for k, v in model.state_dict().items()})
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return model

    def clear(self) -> None:
        self._entries.clear()


PRETRAINED = PretrainedWeights()


def pretrained_source(source: str, revision: str, config: PretrainedConfig) -> dict:
    """Where an encoder's weights came from: source, the revision asked for, and for a hub id the commit it
    resolved to (transformers notes it on the config), so adapters saved on it name the exact base."""
    return {"source": source, "revision": revision, "commit": getattr(config, "_commit_hash", None) or ""}


def _load_pretrained(source: str, overrides: dict | None, revision: str, weights_dir: str):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    options = {"revision": revision or None}
    if weights_dir:
        # A pre-fetched directory is the only place to look: no network, no silent download.
        options.update(cache_dir=weights_dir, local_files_only=True)
    try:
        base_config = load_config(source, **options)
        model = load_pretrained_encoder(source, with_overrides(base_config, overrides), **options)
    except OSError as error:
        where = f"weights_dir={weights_dir}" if weights_dir else "the Hugging Face cache or the hub"
        raise OSError(
            f"could not load encoder weights {source!r} (revision {revision or 'default'}) from {where}: {error}\n"
            f"Pre-fetch them with `python -m orchestrator.weights fetch <start> --dir DIR` and set weights_dir=DIR, "
            "or set start to a local directory (save_pretrained layout)."
        ) from error
    return model, base_config


def _model_from_weights(config: PretrainedConfig, weights: dict) -> nn.Module:
    """Build without random initialisation (meta device), then take copies of the cached weights."""
    with torch.device("meta"):
        model = encoders.family_of(config).build(config)
    expected = model.state_dict()
    state = {k: v.clone() for k, v in weights.items() if k in expected}
    model.load_state_dict(state, strict=False, assign=True)
    if "masked_spec_embed" in expected and "masked_spec_embed" not in state:
        # The checkpoint had time masking off and this trial turns it on: a fresh mask embedding,
        # as from_pretrained would initialise it.
        model.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size).uniform_())
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise RuntimeError(f"cached encoder weights lack {still_meta[:5]}; clear workers.finetune.model.PRETRAINED")
    return model


class MeanPooling(nn.Module):
    """The paper's pooling: no parameters, so a frozen encoder's pooled outputs can be cached."""

    wants_all_layers = False

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        return masked_mean(hidden, frame_mask)


class AttentivePooling(nn.Module):
    """A learned score per frame; the clip vector is the softmax-weighted sum over valid frames."""

    wants_all_layers = False

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(hidden).squeeze(-1).float()
        if frame_mask is not None:
            scores = scores.masked_fill(~frame_mask.bool(), float("-inf"))
        weights = torch.softmax(scores, dim=1).unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1)


class WeightedLayerSum(nn.Module):
    """s3prl's weighted sum: softmax weights over every layer's output, then the masked mean.

    Needs layerdrop 0: a skipped layer has no output, and the weights would no longer line up.
    """

    wants_all_layers = True

    def __init__(self, num_states: int):
        super().__init__()
        self.num_states = num_states
        self.layer_weights = nn.Parameter(torch.zeros(num_states))

    def forward(self, states: tuple[torch.Tensor, ...], frame_mask: torch.Tensor | None) -> torch.Tensor:
        if len(states) != self.num_states:
            raise RuntimeError(
                f"weighted layer sum expects {self.num_states} hidden states, got {len(states)} (layerdrop must be 0)"
            )
        weights = torch.softmax(self.layer_weights, dim=0).to(states[0].dtype)
        mixed = sum(w * s for w, s in zip(weights, states))
        return masked_mean(mixed, frame_mask)


def build_pooler(pooling: str, config: PretrainedConfig) -> nn.Module:
    """The pooling module (checked by workers.finetune.config.check_pooling: a weighted sum needs layerdrop 0)."""
    if pooling == "mean":
        return MeanPooling()
    if pooling == "attentive":
        return AttentivePooling(encoders.hidden_size(config))
    # The embedding output plus one output per transformer layer.
    return WeightedLayerSum(encoders.num_states(config))


MODEL_TYPE = "emotion-sweep"


@strict
class EmotionModelConfig(PretrainedConfig):
    """What rebuilds an EmotionClassifier, saved as config.json beside its weights.

    `encoder`: the encoder's config (any family of workers.finetune.encoders) as a dict with its model_type; the
    pooling and the layer that feed the head; the head's width and dropout; the labels (id2label /
    label2id, ESD's five by default); `lora`: rank, alpha and target when the encoder carries LoRA
    adapters, and `base` ({source, revision}) when only the adapters are saved and the base is loaded by id.
    """

    model_type = MODEL_TYPE
    encoder: dict | None = None  # None: the tiny wav2vec2 (tiny_encoder_config)
    pooling: str = "mean"
    layer: int | str = "last"
    hidden_size: int | None = None  # the head's width: the encoder's hidden size
    head_dropout: float = 0.1
    lora: dict | None = None
    # Dimensional emotion (workers.vocabulary.Task): 'categorical' (the classes only), 'dimensions' (a
    # regression output per dimension; the class head is kept, untrained) or 'both'; `dimensions` names
    # the regression outputs in order (arousal, valence, ...), `dimension_scales` their [low, high].
    task: str = "categorical"
    dimensions: list | None = None
    dimension_scales: dict | None = None

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(enumerate(EMOTIONS))
        super().__post_init__(**kwargs)
        self.label2id = {label: i for i, label in self.id2label.items()}
        if self.hidden_size is None:
            self.hidden_size = encoders.hidden_size(self.encoder_config())

    def encoder_config(self, overrides: dict | None = None) -> PretrainedConfig:
        """The encoder's config object, with a trial's regularisation `overrides` when given."""
        values = self.encoder if self.encoder is not None else tiny_encoder_config().to_dict()
        return with_overrides(config_from_dict(dict(values)), overrides)


def config_dict(config: PretrainedConfig) -> dict:
    """An encoder config as a JSON-ready dict (the values that differ from its family's defaults, and model_type)."""
    return json.loads(config.to_json_string())


class EmotionClassifier(PreTrainedModel):
    """encoder -> pooling over valid frames -> head: a transformers model (EmotionModelConfig).

    Built from an encoder and head settings (`EmotionClassifier(encoder, head_dropout=0.2, pooling=...)`,
    the training path: the encoder's weights are kept as given) or from a config (what `from_pretrained`
    and the Auto classes call). `layer` picks the hidden state that feeds the pooling: 'last' or an index
    (0: the embedding output, k: transformer layer k). `classify(audio, lengths)` takes int16 batches
    and works for every family; `forward` follows Hugging Face's convention (raw samples, or Whisper's
    input_features; a SequenceClassifierOutput), so `pipeline("audio-classification")` gets what `predict`
    gets; `classify_waveform(values, attention_mask)` takes normalised waveforms (not Whisper).
    `labels` (the class names, in logit order) is where the labels live; the config's id2label follows it.
    """

    config_class = EmotionModelConfig
    base_model_prefix = "emotion"
    main_input_name = "input_values"
    # A checkpoint saved with time masking on loads into a model with it off (workers.finetune.checkpoint).
    _keys_to_ignore_on_load_unexpected = [r"masked_spec_embed"]

    def __init__(
        self,
        encoder: nn.Module | EmotionModelConfig,
        num_labels: int | None = None,
        head_dropout: float = 0.1,
        pooling: str = "mean",
        layer: int | str = "last",
        labels: tuple[str, ...] | list[str] | None = None,
        task: str = "categorical",
        dimensions: tuple[str, ...] = (),
        dimension_scales: dict | None = None,
    ):
        if isinstance(encoder, EmotionModelConfig):
            config, encoder = encoder, None
        else:
            names = list(labels) if labels is not None else list(EMOTIONS)[: num_labels or len(EMOTIONS)]
            if len(names) < 2 or len(set(names)) != len(names):
                raise ValueError(f"a classifier needs at least 2 distinct labels, got {tuple(names)}")
            config = EmotionModelConfig(
                encoder=config_dict(encoder.config),
                pooling=pooling,
                layer=layer,
                head_dropout=head_dropout,
                id2label=dict(enumerate(names)),
                task=task,
                dimensions=list(dimensions) or None,
                dimension_scales=dict(dimension_scales or {}) or None,
            )
        super().__init__(config)
        given = encoder is not None
        if encoder is None:
            encoder = build_encoder(config.encoder_config())
            if config.lora:
                add_lora(encoder, config.lora["rank"], config.lora["alpha"], config.lora["target"])
        self.encoder = encoder
        self.family = encoders.family_of(encoder.config).model_type
        self.pooling = config.pooling
        self.layer = check_layer(config.layer, encoder.config)
        check_pooling(config.pooling, self.layer, encoders.layerdrop(encoder.config))
        self.pooler = build_pooler(config.pooling, encoder.config)
        self.head = ClassificationHead(encoders.hidden_size(encoder.config), config.num_labels, config.head_dropout)
        # One regression output per dimension (task 'dimensions' or 'both'), the same shape of head as the classes'.
        hidden = encoders.hidden_size(encoder.config)
        self.dimension_head = (
            ClassificationHead(hidden, len(config.dimensions), config.head_dropout) if config.dimensions else None
        )
        self.encoder_weights_trained = False  # set by set_trainable: a LoRA checkpoint then keeps the base too
        if given:  # the encoder's weights as given, the head's as torch drew them: nothing to initialise again
            for part in self.modules():
                part._is_hf_initialized = True
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, WeightedLayerSum):
            hf_init.zeros_(module.layer_weights)
        else:
            super()._init_weights(module)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.config.id2label[i] for i in range(len(self.config.id2label)))

    @labels.setter
    def labels(self, names: list[str]) -> None:
        names = list(names)
        if len(names) != self.head.out_proj.out_features:
            raise ValueError(f"{len(names)} labels for a head of {self.head.out_proj.out_features} classes")
        self.config.id2label = dict(enumerate(names))
        self.config.label2id = {name: i for i, name in enumerate(names)}

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The regression outputs (arousal, valence, ...), after the class logits in `outputs`; () without."""
        return tuple(self.config.dimensions or ())

    @property
    def task(self) -> str:
        return self.config.task

    def outputs(self, pooled: torch.Tensor) -> torch.Tensor:
        """[batch, labels + dimensions]: the class logits, then one value per dimension (only logits without)."""
        logits = self.head(pooled)
        if self.dimension_head is None:
            return logits
        return torch.cat([logits, self.to_scale(self.dimension_head(pooled))], dim=-1)

    def to_scale(self, values: torch.Tensor) -> torch.Tensor:
        """The head's outputs (around 0, about +-1) on each dimension's scale: its middle + half its range x
        the output, so a fresh head starts at the scale's middle rather than 0 (far below MSP-Podcast's 1-7)."""
        scales = self.config.dimension_scales or {}
        if not scales:
            return values
        low = values.new_tensor([scales.get(d, [-1.0, 1.0])[0] for d in self.dimensions])
        high = values.new_tensor([scales.get(d, [-1.0, 1.0])[1] for d in self.dimensions])
        return (low + high) / 2 + (high - low) / 2 * values

    def _wants_all_layers(self) -> bool:
        return self.pooler.wants_all_layers or self.layer != "last"

    def _pool_states(self, states: tuple[torch.Tensor, ...], frame_mask: torch.Tensor | None) -> torch.Tensor:
        if self.pooler.wants_all_layers:
            return self.pooler(states, frame_mask)
        return self.pooler(states[-1] if self.layer == "last" else states[self.layer], frame_mask)

    def pool(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """One vector per clip from the encoder's outputs over the frames that hold audio."""
        if encoders.family_of(self.encoder.config).log_mel_input:
            raise TypeError(f"a {self.family} encoder takes int16 audio and lengths: use pool_audio / classify")
        # A frozen encoder under a training head: no graph (its activations would be kept for nothing).
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains(self)):
            states, frame_mask = encode_waveform(
                self.encoder, input_values, attention_mask, all_layers=self._wants_all_layers()
            )
        return self._pool_states(states, frame_mask)

    def pool_audio(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """As `pool`, from an int16 [batch, samples] batch and its lengths (every family)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains(self)):
            states, frame_mask = encoders.encode(self.encoder, audio, lengths, all_layers=self._wants_all_layers())
        return self._pool_states(states, frame_mask)

    def classify(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.outputs(self.pool_audio(audio, lengths))

    def classify_frames(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Logits from a wav2vec2-family conv front end's output [batch, frames, channels] (its cache's):
        the encoder's forward from the feature projection on (encoders.waveform.frames.encode_frames)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains(self)):
            states, frame_mask = encode_frames(self.encoder, features, frame_lengths, self._wants_all_layers())
        return self.head(self._pool_states(states, frame_mask))

    def classify_waveform(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from normalised waveforms and their sample mask (not Whisper): `pool` then the head."""
        return self.outputs(self.pool(input_values, attention_mask))

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """Hugging Face's convention, as the saved feature extractor prepares inputs (workers.finetune.hub):
        `input_values` raw samples in [-1, 1] at 16 kHz + `attention_mask` (the model puts them on the
        int16 grid it trained on and normalises each clip itself), or for Whisper `input_features` from
        WhisperFeatureExtractor. The same computation as the saved model's remote code."""
        if self.family == "whisper":
            log_mel, mel_mask = whisper_inputs(input_features, attention_mask)
            with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains(self)):
                states, frame_mask = encoders.run_whisper_encoder(
                    self.encoder, log_mel, mel_mask, all_layers=self._wants_all_layers()
                )
            logits = self.outputs(self._pool_states(states, frame_mask))
        else:
            logits = self.classify(*waveform_inputs(input_values, attention_mask))
        num_labels = len(self.config.id2label)
        loss = nn.functional.cross_entropy(logits[:, :num_labels], labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, weights_dir: str = "", **kwargs):
        """transformers' from_pretrained; a LoRA checkpoint that holds adapters only loads its base (by id and
        revision, from `weights_dir` when given; shared through PRETRAINED) and puts the adapters on it."""
        config = kwargs.get("config")
        if not isinstance(config, EmotionModelConfig):
            config = EmotionModelConfig.from_pretrained(pretrained_model_name_or_path)
            kwargs["config"] = config
        base = (config.lora or {}).get("base")
        if not base:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the base's weights are missing from the file by design
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
        load_lora_base(model, base, weights_dir)
        return model


def load_lora_base(model: EmotionClassifier, base: dict, weights_dir: str = "") -> None:
    """Put the pretrained base's weights under the LoRA adapters of `model` (loaded from adapters only)."""
    lora = model.config.lora
    revision = base.get("commit") or base["revision"]  # the commit the adapters were trained on, when known
    source = build_encoder(base["source"], revision=revision, weights_dir=weights_dir)
    add_lora(source, lora["rank"], lora["alpha"], lora["target"])  # the same parameter names
    own = model.encoder.state_dict()
    weights = {k: v for k, v in source.state_dict().items() if "lora_" not in k and k in own}
    model.encoder.load_state_dict(weights, strict=False)
    model.encoder.pretrained_source = dict(base)


AutoConfig.register(MODEL_TYPE, EmotionModelConfig, exist_ok=True)
AutoModelForAudioClassification.register(EmotionModelConfig, EmotionClassifier, exist_ok=True)


def check_layer(layer: int | str, config: PretrainedConfig) -> int | str:
    """'last' or a hidden-state index within the encoder (0: embedding output)."""
    if layer == "last":
        return layer
    if isinstance(layer, str) and layer.isdigit():
        layer = int(layer)
    if not isinstance(layer, int) or not 0 <= layer < encoders.num_states(config):
        raise ValueError(f"layer must be 'last' or an index in [0, {encoders.num_states(config)}), got {layer!r}")
    return layer


def set_trainable(model: EmotionClassifier, part: str) -> None:
    """Freeze everything, then unfreeze `part`. The head (and the pooler's weights) always train.

    The encoder's parts are the family's (workers.finetune.encoders.unfreeze_encoder_part): the same meaning
    for wav2vec2, HuBERT, WavLM, data2vec and Whisper.
    Frozen parts build no autograd graph: modules that would force grad at their input follow their
    parameters (encoders.parts.sync_requires_grad), and a wholly frozen encoder runs under no_grad
    (EmotionClassifier.pool_audio).
    """
    if part not in TRAINABLE_PARTS:
        raise ValueError(f"unknown trainable part {part!r}; choose one of {TRAINABLE_PARTS}")
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    if model.dimension_head is not None:
        model.dimension_head.requires_grad_(True)
    model.pooler.requires_grad_(True)
    unfreeze_encoder_part(model.encoder, part)
    if part in ("transformer", "all_but_cnn", "all"):
        model.encoder_weights_trained = True


def encoder_trains(model: EmotionClassifier) -> bool:
    return any(p.requires_grad for p in model.encoder.parameters())


def eval_peak_bytes(config: Wav2Vec2Config, clips: int, seconds: float, bytes_per_value: int = 2) -> int:
    """An upper estimate of the activation memory of one no-grad evaluation batch (weights excluded).

    Without gradients only a layer's input, output and temporaries are alive at once. The largest
    are the first conv layer's output (conv_dim[0] channels at 1/stride of the sample rate: for
    XLSR-53 512 x 3,200 values per second of audio), held with its norm and activation temporaries
    (x3), and a transformer layer's attention scores plus its feed-forward activations.
    """
    samples = int(seconds * 16000)
    cnn = 3 * clips * config.conv_dim[0] * (samples // config.conv_stride[0])
    frames = samples // math.prod(config.conv_stride)
    attention = clips * config.num_attention_heads * frames * frames * 2  # scores and softmax
    feed_forward = 3 * clips * frames * config.intermediate_size
    return max(cnn, attention + feed_forward) * bytes_per_value
