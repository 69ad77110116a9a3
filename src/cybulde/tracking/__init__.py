"""Tracking: the MLflow run shared by all stages and ranks, its lineage, and the served model."""
