"""The driver: command-line entry points, building the Tuner, MLflow wiring on the driver side.

It hands a trial a plain config and nothing else.
"""
