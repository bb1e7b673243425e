"""What runs on a worker, one package per trial kind over one shared core.

    core/       what every kind shares: tracking (the only mlflow importer), the Tune reporter seam,
                metrics, evaluation of a set. Imports no kind.
    finetune/   the paper's recipe over a speech encoder (encoders/ holds the families)
    acoustic/   the openSMILE features baseline
    text/       the transcripts baseline
    kinds.py    the registry: each kind's config, run function and saved-model loader
    trial.py    the Tune function every trial enters (imports kinds through the registry)
    vocabulary.py  every MLflow tag, metric key and artifact name

Nothing here knows about Tune's search; `workers.core.reporting` is the one seam that touches Ray.
"""
