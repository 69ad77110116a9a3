"""Preparing and publishing a dataset version: raw sources, label maps, the per-batch work (clean,
split, tokenize), the local and Dask engines, and the streaming publish into a registry.

Dependency order: labels -> sources -> prepare, and engine -> dask_engine (opened by name, on demand);
publish sits on all of them. The package builds on `cybulde.registry` and `cybulde.text`; no other
data package imports it.
"""
