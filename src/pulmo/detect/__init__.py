"""X-ray anomaly detection: config, data pipeline, training loop and tiled inference.

Nothing here imports the detector engine (``ultralytics``, AGPL-3.0, the ``detect``
extra) at module level; it is loaded by :mod:`pulmo.models.detector` on first use.
"""
