"""Training: launch checks, determinism, the LightningModule and the `train` stage function."""
