"""hpsearch: hyperparameter search for image classifiers (CLI, tuner assembly, tracking, export)."""

__version__ = "0.1.0"
