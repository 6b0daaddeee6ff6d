"""The REST API at /api/v1, one module per noun; ``app`` puts them together. The ``balancer``
command and any program use it; it sits on the HTTP front (``balancer.front``) beside the
WebUI, and the two know nothing of each other."""
