"""transfer_zh: the paper's Tables 3-5 and Appendix B, with the English share as a tuned knob.

First an English base is fine-tuned once with the paper's finer recipe (or given with
--init-from). Every other trial starts from that one base:
- zero_shot: no training, only evaluation (Table 3);
- zh_only: fine-tuned on the Mandarin training speaker alone (Table 4);
- mixed: fine-tuned on English + Mandarin with a range of English fractions (Table 5; the
  paper could only afford the natural 4:1 mix).
Every trial is tested on the held-out Mandarin speaker (transfer) and the held-out English
speaker (forgetting, Appendix B).
"""

from dataclasses import replace

from ray import tune

from search_spaces import Scenario, SweepSpec

BASE_MODEL = "{pretrain}"  # filled in by the driver with the base's model directory
PAPER_RECIPE = {"learning_rate": 1e-4, "batch_size": 8, "schedule": "full"}
TUNED = {
    "learning_rate": tune.loguniform(1e-5, 3e-4),
    "batch_size": tune.choice([8, 16]),
    "schedule": tune.grid_search(["full", "paper_finer", "head_only"]),
}


def tiny(spec: SweepSpec) -> SweepSpec:
    """2 CPU cores, a minute or two: tiny random base, one point per scenario, 3 English fractions.

    The base trains with 'full' rather than the finer recipe: a head-only stage teaches a random
    encoder nothing, and the base has to be above chance for the transfer to mean anything.
    """
    tiny_spec = spec.override(
        {
            "start": "tiny",
            "learning_rate": 1e-3,
            "batch_size": 8,
            "schedule": "full",
            "epoch_scale": 1.0,
            "eval_every_steps": 15,
        }
    )
    fractions = {"english_fraction": tune.grid_search([0.25, 0.5, 0.75])}
    return tiny_spec.replace(
        num_samples=1,
        pretrain=Scenario("base", values={"epoch_scale": 3.0}, train_languages=("en",)),
        scenarios=tuple(
            replace(s, points=(), space=fractions if s.name == "mixed" else {}) for s in tiny_spec.scenarios
        ),
    )


SWEEP = SweepSpec(
    name="transfer_zh",
    description="Paper Tables 3-5: English base -> zero-shot, Mandarin-only, English+Mandarin mixes; tests zh and en.",
    base={"start": "finer"},
    space={},
    pretrain=Scenario("base", values={**PAPER_RECIPE, "schedule": "paper_finer"}, train_languages=("en",)),
    scenarios=(
        # Evaluates the base on the same English validation clips the base held out.
        Scenario("zero_shot", values={"init_from": BASE_MODEL, "evaluate_only": True}, train_languages=("en",)),
        Scenario(
            "zh_only", values={"init_from": BASE_MODEL}, train_languages=("zh",), space=TUNED, points=(PAPER_RECIPE,)
        ),
        Scenario(
            "mixed",
            values={"init_from": BASE_MODEL},
            train_languages=("en", "zh"),
            space={**TUNED, "english_fraction": tune.grid_search([0.2, 0.4, 0.6, 0.8])},
            # The paper's mix: all 4 English speakers and the Mandarin one as they come (~0.8).
            points=({**PAPER_RECIPE, "english_fraction": None},),
        ),
    ),
    num_samples=2,
    plan="transfer",
    test_sets=("test_zh", "test_en"),
    fold_language="zh",
    mixing_knob="english_fraction",
    presets={"tiny": tiny},
)
