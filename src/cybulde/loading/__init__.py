"""Loading a dataset version for training and evaluation: the memory-mapped Lightning DataModule.

Depends on `cybulde.registry` (manifest, splits, errors) and `cybulde.text` (padding); nothing in the
other data packages imports it.
"""
