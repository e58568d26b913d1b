"""Using trained models: load a checkpoint, predict files and batches, typed results."""

from pulmo.inference.lung_sounds import CycleResult, LungSoundPipeline, RecordingResult

__all__ = ["CycleResult", "LungSoundPipeline", "RecordingResult"]
