"""The waveform families: wav2vec2 (incl. XLS-R and MMS), HuBERT, WavLM, data2vec-audio.

One layout (a conv front end `feature_extractor`, a transformer `encoder`), one forward pass
(workers.finetune.encoders.waveform.forward: normalised waveform, HF attention mask), TrialConfig's
regularisation names as they are. Import-light: the configs' transformers classes load when a
config is built.
"""

from __future__ import annotations

from functools import partial

from workers.finetune.encoders.registry import Family

# Width 64, 2 layers, conv strides 5*4*4*2 = 160 samples a frame (10 ms at 16 kHz): 1.8 s is ~180 frames.
# Hidden size 64 learned the demo corpus's prosody about 1.5x better than 32 (held-out speaker 0.63 vs
# 0.43 after 8 epochs); the 10 ms frames halve the cost of 5 ms ones at equal accuracy.
TINY_LAYOUT = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(32, 32, 32, 32),
    conv_stride=(5, 4, 4, 2),
    conv_kernel=(10, 8, 8, 4),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    vocab_size=8,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
    layerdrop=0.0,
    mask_time_prob=0.0,
)
PRE_NORM = dict(feat_extract_norm="layer", do_stable_layer_norm=True)  # XLSR's layout
# Small but real-shaped, for benchmarks: a 7-layer conv front end of stride 320 (20 ms frames, as the
# large checkpoints), width 256, 4 layers.
BENCH_LAYOUT = dict(
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=1024,
    conv_dim=(128,) * 7,
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_feat_extract_layers=7,
    num_conv_pos_embeddings=32,
    num_conv_pos_embedding_groups=8,
)
# data2vec's positional embedding is a stack of small convs, not one wide grouped conv: there
# num_conv_pos_embeddings is the number of positional conv layers (of kernel conv_pos_kernel_size).
DATA2VEC_POSITIONS = dict(num_conv_pos_embeddings=2, conv_pos_kernel_size=5)


def _config(class_name: str, **values):
    import transformers

    return getattr(transformers, class_name)(**values)


def tiny_encoder_config():
    """A ~0.1 M-parameter wav2vec2 for the demo and tests (XLSR's layout, no weights)."""
    return _config("Wav2Vec2Config", **TINY_LAYOUT, **PRE_NORM)


def xlsr53_encoder_config():
    """The architecture of facebook/wav2vec2-large-xlsr-53 (~315M parameters), without its weights.

    For benchmarks and GPU sizing: 7 conv layers of 512 channels, strides 5*2^6 = 320 samples a
    frame (20 ms at 16 kHz), 24 pre-norm transformer layers of width 1024.
    """
    return _config(
        "Wav2Vec2Config",
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        hidden_act="gelu",
        conv_dim=(512,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_bias=True,
        feat_extract_norm="layer",
        feat_extract_activation="gelu",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        layer_norm_eps=1e-5,
        vocab_size=32,
    )


def tiny_waveform_config(class_name: str, **extra):
    """The tiny layout in another waveform family's config class."""
    return _config(class_name, **{**TINY_LAYOUT, **extra})


def bench_waveform_config(tiny, **extra):
    """A family's tiny config at benchmark size (BENCH_LAYOUT)."""
    config = tiny()
    return type(config)(**{**config.to_dict(), **BENCH_LAYOUT, **extra})


def waveform_family(model_type: str, model_class: str, tiny_start: str, tiny, **declared) -> Family:
    """A family of the wav2vec2 layout; `tiny` builds its tiny config, `declared` adds Family fields."""
    return Family(
        model_type=model_type,
        model_class=model_class,
        encode="workers.finetune.encoders.waveform.forward:encode_audio",
        frontend=("feature_extractor",),
        transformer=("encoder",),
        attention=("q_proj", "k_proj", "v_proj", "out_proj"),
        feed_forward=("intermediate_dense", "output_dense"),
        random_starts={tiny_start: tiny, **declared.pop("random_starts", {})},
        tiny_start=tiny_start,
        bench_config=declared.pop("bench_config", partial(bench_waveform_config, tiny)),
        **declared,
    )


_tiny_hubert = partial(tiny_waveform_config, "HubertConfig", **PRE_NORM)
_tiny_wavlm = partial(tiny_waveform_config, "WavLMConfig", num_buckets=32, **PRE_NORM)
_tiny_data2vec = partial(tiny_waveform_config, "Data2VecAudioConfig", **DATA2VEC_POSITIONS)

WAV2VEC2 = waveform_family(
    "wav2vec2",
    "transformers:Wav2Vec2Model",
    "tiny",
    tiny_encoder_config,
    random_starts={"xlsr53_random": xlsr53_encoder_config},
    named_starts={
        "finer": "jonatasgrosman/wav2vec2-large-xlsr-53-english",
        "vanilla": "facebook/wav2vec2-large-xlsr-53",
        "xlsr_300m": "facebook/wav2vec2-xls-r-300m",
    },
    sweep_start="xlsr_300m",
)
HUBERT = waveform_family(
    "hubert",
    "transformers:HubertModel",
    "tiny_hubert",
    _tiny_hubert,
    named_starts={"hubert_large": "facebook/hubert-large-ll60k"},
    sweep_start="hubert_large",
)
WAVLM = waveform_family(
    "wavlm",
    "transformers:WavLMModel",
    "tiny_wavlm",
    _tiny_wavlm,
    named_starts={"wavlm_large": "microsoft/wavlm-large"},
    sweep_start="wavlm_large",
)
DATA2VEC_AUDIO = waveform_family(
    "data2vec-audio",
    "transformers:Data2VecAudioModel",
    "tiny_data2vec",
    _tiny_data2vec,
    named_starts={"data2vec_large": "facebook/data2vec-audio-large"},
    sweep_start="data2vec_large",
    stacked_position_convs=True,
    bench_config=partial(bench_waveform_config, _tiny_data2vec, num_conv_pos_embeddings=2),
)
