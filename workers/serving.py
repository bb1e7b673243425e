"""Old loader module of saved MLflow Models (`loader_module: workers.serving` in their MLmodel file).
The code lives in workers.finetune.serving."""

from workers.finetune.serving import *  # noqa: F401,F403
from workers.finetune.serving import EmotionPredictor, _load_pyfunc  # noqa: F401
