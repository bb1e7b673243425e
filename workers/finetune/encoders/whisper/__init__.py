"""The Whisper encoder as a family: log-mel computed on the device (workers.finetune.encoders.whisper.forward),
the encoder run on the batch's own length, padded frames masked; the decoder is dropped on load.

Import-light: WhisperConfig loads when a config is built.
"""

from __future__ import annotations

from workers.finetune.encoders.registry import Family

# Width 64, 2 encoder layers (and the smallest decoder a WhisperConfig takes), 80 mel bins.
TINY_LAYOUT = dict(
    d_model=64,
    encoder_layers=2,
    encoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_layers=1,
    decoder_attention_heads=4,
    decoder_ffn_dim=128,
    num_mel_bins=80,
    max_source_positions=1500,  # 30 s, as every Whisper
    max_target_positions=32,
    vocab_size=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=1,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    encoder_layerdrop=0.0,
    decoder_layerdrop=0.0,
)
# For benchmarks: width 256, 4 layers (its conv2 gives 20 ms frames, as the waveform families' BENCH_LAYOUT).
BENCH_LAYOUT = dict(d_model=256, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=1024)


def tiny_whisper_config(**changes):
    from transformers import WhisperConfig

    return WhisperConfig(**{**TINY_LAYOUT, **changes})


def bench_whisper_config():
    return tiny_whisper_config(**BENCH_LAYOUT)


WHISPER = Family(
    model_type="whisper",
    model_class="transformers.models.whisper.modeling_whisper:WhisperEncoder",
    encode="workers.finetune.encoders.whisper.forward:encode_audio",
    log_mel_input=True,
    frontend=("conv1", "conv2"),
    transformer=("layers", "layer_norm"),
    attention=("q_proj", "k_proj", "v_proj", "out_proj"),
    feed_forward=("fc1", "fc2"),
    hidden_size_name="d_model",
    num_layers_name="encoder_layers",
    layerdrop_name="encoder_layerdrop",
    # Whisper's encoder has no feature projection and no SpecAugment of its own (WhisperModel masks
    # its input features); those TrialConfig knobs do not apply to it.
    config_names={
        "hidden_dropout": "dropout",
        "attention_dropout": "attention_dropout",
        "activation_dropout": "activation_dropout",
        "layerdrop": "encoder_layerdrop",
    },
    key_mapping={r"^(model\.)?encoder\.": ""},
    always_frozen=("embed_positions",),
    random_starts={"tiny_whisper": tiny_whisper_config},
    tiny_start="tiny_whisper",
    named_starts={"whisper_large_v3": "openai/whisper-large-v3"},
    sweep_start="whisper_large_v3",
    bench_config=bench_whisper_config,
)
