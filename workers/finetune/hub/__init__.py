"""A saved model as Hugging Face users use it: the feature extractor it expects, the model's code for
`trust_remote_code=True` (config.json's `auto_map`), and a model card (README.md).

    <dir>/preprocessor_config.json    Wav2Vec2FeatureExtractor (16 kHz, raw samples: the model normalises
                                      them itself) or, for Whisper-family encoders, WhisperFeatureExtractor
    <dir>/modeling_emotion_sweep.py   the model's code (torch and transformers only), named by auto_map
    <dir>/README.md                   the model card (workers.finetune.hub.card)

So `pipeline("audio-classification", model=DIR, trust_remote_code=True)` answers in a process that has
never imported this package, with the probabilities `predict` gives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REMOTE_CODE = Path(__file__).with_name("modeling_emotion_sweep.py")
AUTO_MAP = {
    "AutoConfig": f"{REMOTE_CODE.stem}.EmotionSweepConfig",
    "AutoModelForAudioClassification": f"{REMOTE_CODE.stem}.EmotionSweepForAudioClassification",
}
SAMPLE_RATE = 16_000


def feature_extractor_for(encoder_config: dict):
    """The extractor whose output the saved model's forward takes (see modeling_emotion_sweep.py)."""
    if encoder_config.get("model_type") == "whisper":
        from transformers import WhisperFeatureExtractor

        return WhisperFeatureExtractor(
            feature_size=encoder_config.get("num_mel_bins", 80), sampling_rate=SAMPLE_RATE, return_attention_mask=True
        )
    from transformers import Wav2Vec2FeatureExtractor

    # do_normalize=False: the model puts the samples on its int16 grid and normalises each clip itself,
    # exactly as in training; normalising here first would change what it sees.
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=False, return_attention_mask=True
    )


def write_hub_files(directory: str | Path) -> Path:
    """Add the feature extractor and the remote code to a saved model directory (config.json present)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():  # save_pretrained writes nothing on a data-parallel worker other than 0
        return directory
    config = json.loads(config_path.read_text())
    feature_extractor_for(config.get("encoder") or {}).save_pretrained(directory)
    shutil.copyfile(REMOTE_CODE, directory / REMOTE_CODE.name)
    config["auto_map"] = AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory
