"""Command-line handlers, one module per capability (``evaluate(args)``, ``analyze(args)``)."""
