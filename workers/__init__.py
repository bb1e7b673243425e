"""What runs on a worker: the fine-tuning recipe, the model, evaluation.

Nothing here knows about Tune's search; `workers.reporting` is the one seam that touches Ray.
"""
