"""Datasets, training, evaluation, grounding and the demo."""
