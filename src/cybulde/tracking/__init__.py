"""Tracking: the MLflow client's plumbing (`client`), the run shared by all stages and ranks, and its lineage."""
