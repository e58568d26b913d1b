"""Losses selectable by config name."""

from pulmo.losses.class_balanced import build_classification_loss, class_balanced_weights, inverse_frequency_weights

__all__ = ["build_classification_loss", "class_balanced_weights", "inverse_frequency_weights"]
