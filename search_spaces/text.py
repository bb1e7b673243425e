"""text: the paper's text-only model (section 6): a multilingual BERT and the paper's head on the transcripts.

ESD speaks the same sentences in every emotion, so the paper's model scored at chance (0.20): the
check that the audio models learn from how things are said, not what. Learning rate and batch size
tuned; trained on the paper plan's English speakers, tested on its held-out speakers.
"""

from ray import tune

from search_spaces import SweepSpec


def tiny(spec: SweepSpec) -> SweepSpec:
    """2 CPU cores, a minute or two: a random 2-layer BERT with a WordPiece tokenizer trained on the
    corpus's own transcripts (no download), larger steps; 2 x 2 grid."""
    return spec.override(
        {
            "encoder": "tiny",
            "learning_rate": tune.grid_search([1e-3, 3e-3]),
            "batch_size": tune.grid_search([16, 32]),
            "epochs": 3,
        }
    ).replace(num_samples=1)


SWEEP = SweepSpec(
    name="text",
    description="Text-only baseline (paper section 6): multilingual BERT on the transcripts, lr x batch size.",
    kind="text",
    base={"encoder": "bert-base-multilingual-cased", "epochs": 3},
    space={
        "learning_rate": tune.loguniform(1e-5, 1e-4),
        "batch_size": tune.grid_search([16, 32]),
    },
    num_samples=2,
    metric="val/accuracy",
    plan="paper",
    presets={"tiny": tiny},
)
