"""One front door to every capability: check the input before decoding it, decide from its
content which capabilities run (or refuse what none was built for), run the models, and write a
result a person can read (JSON + HTML report with figures). Used by ``pulmo analyze`` and by the
HTTP service (``pulmo.serve``).
"""

from pulmo.frontdoor.capabilities import CAPABILITIES, Analysis, Capability, Figure, analyze_path, run_route
from pulmo.frontdoor.routing import Route, route_file

__all__ = ["CAPABILITIES", "Analysis", "Capability", "Figure", "Route", "analyze_path", "route_file", "run_route"]
