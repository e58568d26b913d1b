"""Command-line handlers, one module per capability: ``evaluate(args)`` scores a model on a data folder."""
