"""Deployment helpers for `ray up cluster.yaml`: run from the project root (`python -m deploy.NAME`)."""
