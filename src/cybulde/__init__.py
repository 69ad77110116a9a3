"""cybulde: a reproducible training pipeline for classifiers of harmful online text."""

__version__ = "0.1.0"
