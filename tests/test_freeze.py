"""Frozen parts build no autograd graph, for every stage kind of a freeze schedule."""

import pytest
import torch

from shards.batching import collate
from shards.reader import ShardReader
from workers.finetune.config import TRAINABLE_PARTS
from workers.finetune.encoders import add_lora
from workers.finetune.model import EmotionClassifier, build_encoder, normalize_audio, set_trainable

# The tiny wav2vec2's module names (workers.finetune.encoders maps them per family).
CNN_PART = "feature_extractor"
TRANSFORMER_PART = "encoder"

# What each stage kind leaves frozen, by the encoder's own attribute names.
FROZEN_PARTS = {
    "head": ("",),  # the whole encoder
    "transformer": (CNN_PART, "feature_projection"),
    "all_but_cnn": (CNN_PART,),
    "all": (),
    "lora": (CNN_PART, "feature_projection"),  # and every base weight of the transformer (adapters train)
}


@pytest.fixture
def batch(demo_dir):
    reader = ShardReader(demo_dir)
    return collate(reader, reader.index.select(["0011"])[::5])


def frozen_modules(encoder: torch.nn.Module, part: str) -> list[tuple[str, torch.nn.Module]]:
    roots = FROZEN_PARTS[part]
    return [
        (name, module)
        for name, module in encoder.named_modules()
        if any(name == root or name.startswith(f"{root}.") or root == "" for root in roots)
    ]


def tensors_in(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else []
    return [t for value in values for t in tensors_in(value)]


def training_step(model: EmotionClassifier, batch) -> None:
    """As the recipe trains: train mode (dropout, SpecAugment masking on), loss, backward, step."""
    model.train()
    values, mask = normalize_audio(torch.from_numpy(batch.audio), torch.from_numpy(batch.lengths))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = torch.nn.functional.cross_entropy(
        model.classify_waveform(values, attention_mask=mask), torch.from_numpy(batch.labels)
    )
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("part", TRAINABLE_PARTS)
def test_frozen_modules_build_no_graph_and_get_no_gradient(batch, part):
    torch.manual_seed(0)
    # Masking on: the masked-frame embedding is a frozen parameter in some stages.
    model = EmotionClassifier(build_encoder("tiny", {"mask_time_prob": 0.3, "mask_time_length": 2}))
    if part == "lora":
        add_lora(model.encoder, rank=4, alpha=8, target="attention")
    set_trainable(model, part)
    frozen = frozen_modules(model.encoder, part)
    outputs_with_grad: list[str] = []

    def record(name):
        def hook(module, inputs, output):
            if any(t.requires_grad for t in tensors_in(output)):
                outputs_with_grad.append(name)

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in frozen]
    training_step(model, batch)
    for handle in handles:
        handle.remove()

    assert len(frozen) > 0 or part == "all"
    assert outputs_with_grad == [], f"frozen modules whose output requires grad in stage {part}: {outputs_with_grad}"
    frozen_parameters = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None] == []
    # The stage trains what it names: its parameters all got a gradient.
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(model.get_parameter(n).grad is not None for n in trained if not n.endswith("masked_spec_embed"))
    expected_frozen = {
        "head": lambda n: n.startswith("encoder."),
        "transformer": lambda n: n.startswith("encoder.") and not n.startswith(f"encoder.{TRANSFORMER_PART}."),
        "all_but_cnn": lambda n: n.startswith(f"encoder.{CNN_PART}."),
        "all": lambda n: False,
        "lora": lambda n: n.startswith("encoder.") and "lora_" not in n,
    }[part]
    assert frozen_parameters == [n for n, _ in model.named_parameters() if expected_frozen(n)]


def test_a_frozen_cnn_is_unfrozen_again_by_a_later_all_stage(batch):
    model = EmotionClassifier(build_encoder("tiny"))
    set_trainable(model, "all_but_cnn")
    set_trainable(model, "all")
    training_step(model, batch)
    cnn = getattr(model.encoder, CNN_PART)
    assert all(p.grad is not None for p in cnn.parameters())


def test_an_eval_batch_of_64_of_esds_longest_clips_fits_a_shared_gpu_for_xlsr53():
    from workers.finetune.model import eval_peak_bytes, xlsr53_encoder_config

    batch = 64  # what workers/finetune/config.py advises for eval_batch_size on a GPU
    longest_esd_clip_seconds = 8.1
    peak = eval_peak_bytes(xlsr53_encoder_config(), batch, longest_esd_clip_seconds, bytes_per_value=2)
    # A quarter of an L40S (48 GB), as with --gpus-per-trial 0.25, minus XLSR-53's weights and AdamW state.
    assert peak < 48e9 / 4 - 5e9
    assert eval_peak_bytes(xlsr53_encoder_config(), 2 * batch, longest_esd_clip_seconds) >= 2 * peak - 1
