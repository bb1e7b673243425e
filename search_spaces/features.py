"""features: the ESD paper's baseline, openSMILE functionals into a classifier, tuned on a CPU in minutes.

eGeMAPS functionals (88 per clip) computed once per corpus and shared by every trial on the node,
standardised, then one scenario per classifier, each with its own knobs: logistic regression and
an RBF SVM over their regularisation C, a small MLP over its hidden sizes and L2 penalty alpha.
Trained on the paper plan's English speakers, tested on its held-out English and Mandarin speakers.
"""

from ray import tune

from search_spaces import Scenario, SweepSpec

SWEEP = SweepSpec(
    name="features",
    description="Acoustic-features baseline: openSMILE eGeMAPS + logreg / SVM / MLP tuned (10 trials, CPU, minutes).",
    kind="features",
    base={"feature_set": "eGeMAPSv02"},
    space={},
    scenarios=(
        Scenario("logreg", values={"classifier": "logreg"}, space={"C": tune.grid_search([0.01, 0.1, 1.0])}),
        Scenario("svm", values={"classifier": "svm"}, space={"C": tune.grid_search([0.3, 3.0, 30.0])}),
        Scenario(
            "mlp",
            values={"classifier": "mlp"},
            space={"hidden_sizes": tune.grid_search([(64,), (128, 64)]), "alpha": tune.grid_search([1e-3, 1e-1])},
        ),
    ),
    metric="val/accuracy",
    plan="paper",
    presets={
        # One configuration per classifier (3 trials).
        "tiny": {"C": 1.0, "hidden_sizes": (64,), "alpha": 1e-3},
        # The larger openSMILE set (6373 functionals; extraction ~2x slower).
        "compare": {"feature_set": "ComParE_2016"},
    },
)
