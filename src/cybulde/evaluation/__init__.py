"""Evaluation of an exported model: metrics, the sigmoid decision threshold, DVC plots."""
