"""The fine-tuning trial: the paper's recipe over a speech encoder (encoders/ holds the families)."""
