"""Launchers for cloud infrastructure (the training cluster on Google Cloud)."""
