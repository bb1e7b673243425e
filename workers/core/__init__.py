"""What every trial kind shares: tracking, reporting to Tune, metrics, evaluation of a set. Imports no kind."""
