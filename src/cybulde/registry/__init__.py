"""Versioned tokenized datasets: publish to a registry, fetch a verified copy, load it for training."""
