"""Typed trial configuration: every knob a sweep can tune, with its meaning.

Pure dataclasses (no torch), so the driver can validate `--set key=value` and search spaces
without importing training code.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field

from workers.core.class_balance import check_class_weights
from workers.core.kind_config import canonical_values, typed_value
from workers.finetune.encoders import registry as encoder_registry
from workers.vocabulary import Task

# The same in every encoder family (workers.finetune.encoders): 'all_but_cnn' keeps the conv front end frozen
# (Whisper: its two conv layers); 'lora' trains only LoRA adapters (lora_* fields) and the head.
TRAINABLE_PARTS = ("head", "transformer", "all_but_cnn", "all", "lora")
# Which projections get LoRA adapters: attention (q, k, v, out) or attention plus feed-forward.
LORA_TARGETS = ("attention", "attention_ffn")
# How frame-level encoder outputs become one vector per clip (workers.finetune.model.POOLERS).
POOLINGS = ("mean", "attentive", "weighted_sum")
# Attention kernels of the encoder (transformers' attn_implementation): SDPA picks flash or
# memory-efficient kernels on a GPU; eager is the reference matmul + softmax.
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
DIMENSION_LOSSES = ("ccc", "mse")  # workers.core.dimensions.dimension_loss
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# TrialConfig fields written into the encoder's Wav2Vec2Config before the model is built, so a
# checkpoint's own regularisation is never silently inherited.
ENCODER_CONFIG_FIELDS = (
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
    "layerdrop",
    "mask_time_prob",
    "mask_time_length",
    "mask_time_min_masks",
    "mask_feature_prob",
    "mask_feature_length",
)

# Starts, declared by the encoder families (workers.finetune.encoders, import-light) and read live:
# RANDOM_STARTS: random weights built from a config, nothing to download (start name -> config builder);
# START_MODELS: named start checkpoints (start name -> hub id). Anything else is a hub id or a local directory.
RANDOM_STARTS = encoder_registry.RANDOM_STARTS
START_MODELS = encoder_registry.NAMED_STARTS


def check_pooling(pooling: str, layer: int | str, layerdrop: float) -> None:
    """The pooling rules, where a trial is configured and where a model is built (workers.finetune.model).

    A weighted layer sum weighs every layer's output: it needs layerdrop 0 (a skipped layer has no
    output, and the weights would no longer line up) and takes no single `layer`.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    if pooling == "weighted_sum" and layerdrop > 0:
        raise ValueError(
            f"pooling='weighted_sum' needs layerdrop=0 (got {layerdrop}): a dropped layer leaves no "
            "output for its weight; set layerdrop=0"
        )
    if pooling == "weighted_sum" and layer != "last":
        raise ValueError("pooling='weighted_sum' uses every layer; leave layer='last'")


def check_training_data_knobs(cfg) -> None:
    """Class weighting, label smoothing and augmentation ranges (a range is (lo, hi), lo <= hi)."""
    check_class_weights(cfg.class_weights)
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    for name in ("noise_snr_db", "gain_db"):
        value = getattr(cfg, name)
        if value is not None and (len(value) != 2 or value[0] > value[1]):
            raise ValueError(f"{name} must be a range [lo, hi] with lo <= hi, or None (off); got {value!r}")
    if cfg.noise_path and cfg.noise_snr_db is None:
        raise ValueError("noise_path names a noise corpus but noise_snr_db is None; set noise_snr_db=[lo, hi]")
    if cfg.noise_path and not cfg.noise_path.startswith("/"):
        raise ValueError(f"noise_path must be an absolute path (trials run elsewhere), got {cfg.noise_path!r}")


@dataclass(frozen=True)
class Stage:
    """One stage of a freeze schedule."""

    trainable: str  # one of TRAINABLE_PARTS
    epochs: float
    learning_rate: float
    batch_size: int

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE_PARTS:
            raise ValueError(f"stage trainable {self.trainable!r} is not one of {TRAINABLE_PARTS}")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.batch_size < 1:
            raise ValueError(f"stage needs epochs > 0, learning_rate > 0, batch_size >= 1: {self}")


def schedule_stages(name: str, learning_rate: float, batch_size: int) -> list[Stage]:
    """The named freeze schedules, scaled to a trial's learning rate and batch size.

    The paper used learning_rate=1e-4 and batch_size=8 for both starts.
    """
    presets = {
        # Finer: head alone 1 epoch, then everything but the CNN feature encoder 1 epoch.
        "paper_finer": [
            Stage("head", 1, learning_rate, batch_size),
            Stage("all_but_cnn", 1, learning_rate, batch_size),
        ],
        # Vanilla: 2 epochs, then lr x0.1 and batch 8 -> 10 (x1.25) for 2 more "to smooth the curve".
        "paper_vanilla": [
            Stage("all_but_cnn", 2, learning_rate, batch_size),
            Stage("all_but_cnn", 2, learning_rate * 0.1, max(batch_size + 1, round(batch_size * 1.25))),
        ],
        "full": [Stage("all_but_cnn", 2, learning_rate, batch_size)],
        "head_only": [Stage("head", 2, learning_rate, batch_size)],
        # Parameter-efficient: head alone 1 epoch, then LoRA adapters (and head) 2 epochs.
        "lora": [Stage("head", 1, learning_rate, batch_size), Stage("lora", 2, learning_rate, batch_size)],
    }
    if name not in presets:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(presets)}")
    return presets[name]


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs. Search spaces override fields by name."""

    # Data
    data_dir: str = ""  # shard directory (absolute path; filled in by the driver)
    train_speakers: tuple[str, ...] = ("0011", "0012", "0013", "0014")
    eval_sets: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"test_en": ("0015",)})
    val_fraction: float = 0.1  # of the training speakers' clips, held out for validation
    max_seconds: float = 0.0  # crop training clips to this length (0: no crop)
    # Share of English clips in each training epoch, 0..1 (None: as the training speakers come).
    # The paper's instance of mixing: english_fraction=x is mix_source='en', source_fraction=x.
    english_fraction: float | None = None
    # Mixing of any two languages: the share of `mix_source`'s clips (an ISO 639 code of a training
    # speaker's language) in each epoch, the rest drawn from the other training languages.
    mix_source: str = "en"
    source_fraction: float | None = None
    # Held-out sets from other shard directories (cross-corpus tests): set name -> shard directory.
    # Their labels count as this corpus's by name (case-insensitive) or through `eval_label_map`;
    # clips whose label maps to none are left out and counted (`<set>/unmapped_clips`).
    extra_eval_data: dict[str, str] = field(default_factory=dict)
    eval_label_map: dict[str, str] = field(default_factory=dict)  # other corpus's label -> this corpus's
    # Model
    # 'tiny', 'tiny_hubert', 'tiny_wavlm', 'tiny_data2vec', 'tiny_whisper' or 'xlsr53_random' (random
    # weights, built from config), a named start (START_MODELS), a hub id, or a local directory
    # (save_pretrained layout). Families: wav2vec2 (XLS-R, MMS), hubert, wavlm, data2vec-audio, whisper;
    # a checkpoint's task head (CTC, pretraining, classification, Whisper's decoder) is dropped.
    start: str = "tiny"
    init_from: str = ""  # a saved emotion model (workers.finetune.checkpoint) to start from instead; head included
    head_dropout: float = 0.1
    # Schedule: a named preset scaled by learning_rate and batch_size, or explicit stages.
    schedule: str = "paper_finer"
    learning_rate: float = 1e-4
    # Clips per optimizer step, global: with --workers-per-trial N each worker trains batch_size / N of
    # them (as HF's Trainer and Lightning count a global batch), so N changes the speed, not the maths.
    batch_size: int = 8
    stages: tuple[dict, ...] = ()  # explicit stages (dicts of Stage fields); overrides schedule
    # No training at all: evaluate the start model (e.g. transfer_zh's zero-shot trial of its base).
    evaluate_only: bool = False
    epoch_scale: float = 1.0  # multiplies every stage's length (tiny models need more epochs)
    # The paper's adaptive learning rate and early stopping.
    eval_every_steps: int = 10  # optimizer steps per evaluation round on the validation clips
    lr_decay_patience: int = 2  # consecutive rounds of rising val loss tolerated; one more decays the lr
    lr_decay_factor: float = 0.1
    # Rounds without a new best val loss before the current stage ends early (0: never); the next
    # stage still runs, and the trial ends with the best state whichever stage found it.
    early_stop_patience: int = 0
    # Run
    seed: int = 0
    num_threads: int = 1  # torch CPU threads; the driver sets it to the trial's CPUs

    # --- Start weights ---
    start_revision: str = ""  # hub branch, tag or commit of `start` ("": the default branch)
    # A directory filled by `python -m orchestrator.weights fetch` (Hugging Face cache layout). When
    # set, hub starts load from it and never touch the network; with HF_HUB_OFFLINE=1 the default
    # cache works offline too.
    weights_dir: str = ""
    # --- Encoder regularisation: written into the start's config before the model is built ---
    # The paper inherited each checkpoint's values; here they are explicit and logged. Defaults are
    # Wav2Vec2Config's; `python -m orchestrator.weights show finer` prints a checkpoint's own values.
    hidden_dropout: float = 0.1  # after attention/feed-forward blocks and on the positional embedding sum
    attention_dropout: float = 0.1  # on attention probabilities
    activation_dropout: float = 0.1  # inside the feed-forward block
    feat_proj_dropout: float = 0.0  # after projecting CNN features to the transformer width
    layerdrop: float = 0.1  # probability of skipping a whole transformer layer per training step
    mask_time_prob: float = 0.05  # SpecAugment: share of frames masked during training (0: off)
    mask_time_length: int = 10  # frames per time mask (20 ms a frame for XLSR-53)
    mask_time_min_masks: int = 2  # at least this many time masks per clip when masking is on
    mask_feature_prob: float = 0.0  # SpecAugment over feature channels (0: off)
    mask_feature_length: int = 10  # channels per feature mask
    # --- What the trial learns (workers.vocabulary.Task) ---
    # 'categorical' (the corpus's classes, cross-entropy), 'dimensions' (arousal, valence, dominance of a
    # corpus that has them: a regression output each, `dimension_loss`) or 'both' (one shared encoder,
    # cross-entropy + dimension_weight x the dimension loss).
    task: str = "categorical"
    dimension_loss: str = "ccc"  # 'ccc' (1 - mean CCC over the batch, the MSP-Podcast challenge's) or 'mse'
    dimension_weight: float = 1.0  # task='both': the dimension loss's weight beside the cross-entropy
    # --- Head ---
    # 'mean' (the paper's: mean over valid frames), 'attentive' (learned frame weights) or
    # 'weighted_sum' (learned softmax weights over every layer's output, then mean; needs layerdrop=0).
    pooling: str = "mean"
    # Hidden state that feeds the pooling: 'last' or an index (0: embedding output, k: transformer layer k).
    layer: int | str = "last"
    # --- LoRA (stages with trainable='lora', e.g. schedule='lora'): peft adapters on the encoder ---
    lora_rank: int = 8  # rank r of each adapter's low-rank update
    lora_alpha: float = 16.0  # the update is scaled by lora_alpha / lora_rank
    lora_target: str = "attention"  # one of LORA_TARGETS: attention projections, or also feed-forward
    # --- Imbalanced classes (workers.core.class_balance) ---
    # Weights of the training loss per class, from the training clips' class counts: 'none', 'balanced'
    # (n / (k n_c), scikit-learn's) or 'sqrt' (1 / sqrt(n_c)); mean weight 1 over the training clips.
    # Evaluation losses (val/loss, which drives the adaptive lr and the best model) stay unweighted.
    class_weights: str = "none"
    # Each epoch's clips drawn class-uniformly (as many as the training clips; a small class's clips repeat,
    # a large class's are subsampled, a fresh draw every epoch), still length-bucketed. With a language mix,
    # class-uniform within each language's share. Beside class_weights it corrects twice.
    balanced_sampling: bool = False
    label_smoothing: float = 0.0  # of the training loss's targets (torch cross_entropy's), 0..1
    # --- Augmentation (workers.finetune.augment): training clips only, on the fly, seeded; never evaluation ---
    # Per clip, after the crop: speed x0.9/1.0/1.1 by resampling (Kaldi's and SpeechBrain's speed perturbation;
    # length x1/speed), gain, then noise at an SNR drawn from the range.
    speed_perturb: bool = False
    noise_snr_db: tuple[float, ...] | None = None  # (lo, hi) SNR in dB, uniform per clip; None: no noise
    # Noise source: '' generates coloured noise per clip (white, pink or brown); else a shard directory
    # (a noise corpus ingested like any other, e.g. `ingest table`), a random stretch of a random clip.
    noise_path: str = ""
    gain_db: tuple[float, ...] | None = None  # (lo, hi) dB, uniform per clip; None: off. Clips at full scale.
    # --- Optimisation ---
    weight_decay: float = 0.0  # AdamW; 0 as in the HF Trainer defaults the paper's notebook used
    max_grad_norm: float = 1.0  # clip the gradient norm per optimizer step (0: no clipping)
    # Micro-batches per optimizer step. A stage's batch_size stays the clips per step (the paper's
    # "batch size"); accumulation only splits it to fit memory and leaves the maths unchanged.
    grad_accum_steps: int = 1
    # Each stage starts at its own learning rate (the paper: "for both parts ... an initial learning
    # rate of 1e-4"); False carries the adaptive x0.1 decays over into the next stage.
    reset_lr_each_stage: bool = True
    # A head-only stage runs the frozen encoder in eval mode (no dropout/layerdrop/masking), so its
    # features are deterministic and cacheable. True: train mode, as the HF Trainer of the paper's
    # notebook did; this turns the frozen-feature cache off.
    frozen_encoder_dropout: bool = False
    # --- Speed ---
    bf16: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the encoder (CUDA only; skipped on CPU, noted in the run's tags)
    compile_mode: str = "default"  # torch.compile mode; 'reduce-overhead' adds CUDA graphs
    # Recompute each transformer layer's activations in the backward pass instead of keeping them (HF's
    # gradient_checkpointing_enable): ~1/3 more compute for a fraction of the activation memory, what lets
    # a 300-600 M parameter encoder train on a 24-48 GB GPU (figures: python -m bench scale). Same maths.
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"  # encoder attention: 'sdpa' (fused kernels) or 'eager'; set on every start
    prefetch_batches: int = 4  # batches collated ahead on a background thread (0: collate inline)
    # Clips per evaluation batch (sorted by length). 0 (default): sized by the device -- on a CPU 16, the
    # best measured (`python -m bench profile`: at 64, one padded batch doubled the evaluation rounds' time);
    # on CUDA as many of the evaluation sets' longest clip as fit in half the memory free at setup, at most
    # 256 (workers.finetune.model.eval_peak_bytes: without gradients 64 of ESD's longest clips, 8.1 s, are ~5 GB for
    # XLSR-53 in bf16; workers.finetune.batch_sources.eval_batch_size). The size used is tagged `eval_batch_size`.
    eval_batch_size: int = 0
    # MLflow calls (metrics, tags, figures, the model) on a writer thread that the trial waits for
    # before each Tune report (workers/core/artifact_writer.py); False: in line, as before.
    background_logging: bool = True
    # Head-only stages train from pooled encoder outputs computed once and stored on disk, keyed by
    # the encoder's weights, the corpus, the rows and the crop (same features as the uncached path).
    cache_frozen_features: bool = True
    feature_cache_dir: str = ""  # where (""): $EMOTION_SWEEP_CACHE/features or ~/.cache/emotion-sweep/features
    # Stages that train the transformer of a wav2vec2-family encoder but not its conv front end (all_but_cnn,
    # transformer, lora) train from the front end's output per clip, computed once and memory-mapped from
    # <feature_cache_dir>/frontend (fp16; crops become crops in frames; SpecAugment still applies after it).
    cache_frontend: bool = True
    # Report the best model as a Tune checkpoint (with train_state.json, for resume) at the next
    # epoch end whenever the best changed; False: only the final best model is reported.
    checkpoint_on_best: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("english_fraction", "source_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (or None), got {value}")
        if self.english_fraction is not None and (self.source_fraction is not None or self.mix_source != "en"):
            raise ValueError(
                "english_fraction is mix_source='en' with source_fraction; set either english_fraction or mix_source/"
                f"source_fraction (got mix_source={self.mix_source!r}, source_fraction={self.source_fraction})"
            )
        clashing = set(self.extra_eval_data) & {"val", *self.eval_sets}
        if clashing:
            raise ValueError(f"extra_eval_data names {sorted(clashing)} are already evaluation sets of the plan")
        if not self.eval_sets:
            raise ValueError("eval_sets must name at least one held-out set")
        overlap = {s for speakers in self.eval_sets.values() for s in speakers} & set(self.train_speakers)
        if overlap:
            raise ValueError(f"speakers {sorted(overlap)} are in both training and a held-out set")
        self.stage_list()  # validate the schedule early
        self._validate_recipe()

    def _validate_recipe(self) -> None:
        for name in (
            "hidden_dropout",
            "attention_dropout",
            "activation_dropout",
            "feat_proj_dropout",
            "layerdrop",
            "mask_time_prob",
            "mask_feature_prob",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.layer != "last" and not (isinstance(self.layer, int) and self.layer >= 0):
            raise ValueError(f"layer must be 'last' or a hidden-state index >= 0, got {self.layer!r}")
        check_pooling(self.pooling, self.layer, self.layerdrop)
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise ValueError(f"lora_rank must be >= 1 and lora_alpha > 0, got {self.lora_rank}, {self.lora_alpha}")
        if self.lora_target not in LORA_TARGETS:
            raise ValueError(f"lora_target {self.lora_target!r} is not one of {LORA_TARGETS}")
        if self.grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        smallest = min((s.batch_size for s in self.stage_list()), default=self.grad_accum_steps)
        if self.grad_accum_steps > smallest:
            raise ValueError(
                f"grad_accum_steps={self.grad_accum_steps} splits a batch of {smallest} clips into "
                "empty micro-batches; use at most the smallest stage batch size"
            )
        if self.eval_every_steps < 1 or self.eval_batch_size < 0 or self.prefetch_batches < 0:
            raise ValueError(
                "eval_every_steps must be >= 1, eval_batch_size >= 0 (0: by device), prefetch_batches >= 0"
            )
        if self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ValueError("max_grad_norm and weight_decay must be >= 0")
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation {self.attn_implementation!r} is not one of {ATTENTION_IMPLEMENTATIONS}"
            )
        if self.task not in Task.ALL:
            raise ValueError(f"task {self.task!r} is not one of {Task.ALL}")
        if self.dimension_loss not in DIMENSION_LOSSES or self.dimension_weight < 0:
            raise ValueError(f"dimension_loss must be one of {DIMENSION_LOSSES} and dimension_weight >= 0")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode {self.compile_mode!r} is not one of {COMPILE_MODES}")
        check_training_data_knobs(self)

    def mixing(self) -> tuple[str, float | None]:
        """(source language, its share of each epoch); share None: the training rows as they come."""
        if self.english_fraction is not None:
            return "en", self.english_fraction
        return self.mix_source, self.source_fraction

    def encoder_overrides(self) -> dict:
        """The Wav2Vec2Config values this trial sets on its encoder, whatever the start's config says."""
        return {"apply_spec_augment": True, **{name: getattr(self, name) for name in ENCODER_CONFIG_FIELDS}}

    def uses_lora(self) -> bool:
        return any(stage.trainable == "lora" for stage in self.stage_list())

    def stage_list(self) -> list[Stage]:
        if self.evaluate_only:
            return []
        stages = (
            [Stage(**s) for s in self.stages]
            if self.stages
            else schedule_stages(self.schedule, self.learning_rate, self.batch_size)
        )
        return [dataclasses.replace(s, epochs=s.epochs * self.epoch_scale) for s in stages]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict) -> TrialConfig:
        """Build from plain values (a Tune config, `--set`), Hugging Face aliases accepted.

        An unknown key names the closest valid one; a value of the wrong type names the key and
        the type it expects.
        """
        values = canonical_values(values, canonical_key)
        return cls(**{key: typed_value(cls, key, value) for key, value in values.items()})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Names Hugging Face users know (TrainingArguments, run_audio_classification.py), accepted
# wherever a config key is (--set, search spaces) and turned into this project's own.
KEY_ALIASES: dict[str, str] = {
    "gradient_accumulation_steps": "grad_accum_steps",
    "eval_steps": "eval_every_steps",
    "per_device_eval_batch_size": "eval_batch_size",
    "per_device_train_batch_size": "batch_size",
    "early_stopping_patience": "early_stop_patience",
    "model_name_or_path": "start",
}


def canonical_key(key: str) -> str:
    """The TrialConfig field a key (or its alias) names; ValueError with the closest valid key."""
    key = KEY_ALIASES.get(key, key)
    names = TrialConfig.field_names()
    if key in names:
        return key
    close = difflib.get_close_matches(key, [*names, *KEY_ALIASES], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "; workers/finetune/config.py lists every key with its meaning"
    raise ValueError(f"unknown config key {key!r}{hint}")
