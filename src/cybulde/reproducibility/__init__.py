"""Checks that keep the pipeline's record honest: stage dependencies, and the pull-request report."""
