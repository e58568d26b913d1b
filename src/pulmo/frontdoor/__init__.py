"""One front door to every capability: pick the capability for a file, check the input
before decoding it, run the model, and write a result a person can read (JSON + HTML
report with figures). Used by ``pulmo analyze`` and by the HTTP service (``pulmo.serve``).
"""

from pulmo.frontdoor.capabilities import CAPABILITIES, Analysis, Capability, Figure, analyze_path, pick_task

__all__ = ["CAPABILITIES", "Analysis", "Capability", "Figure", "analyze_path", "pick_task"]
