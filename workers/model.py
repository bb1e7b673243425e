"""Old import path of the fine-tuned model (README, saved checkpoints): `import workers.model` registers
EmotionModelConfig and EmotionClassifier with transformers' Auto classes. The code lives in
workers.finetune.model."""

from workers.finetune.model import *  # noqa: F401,F403
from workers.finetune.model import EmotionClassifier, EmotionModelConfig  # noqa: F401
