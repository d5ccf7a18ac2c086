"""Inference backends, found through the ``llem.backends`` entry-point group."""
