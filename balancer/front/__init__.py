"""The HTTP front both the REST API (``balancer.api``) and the WebUI (``balancer.web``) sit on:
the listeners (the Unix socket, HTTPS, plain HTTP), the gate every request passes (who is
calling, and may they: sessions, API keys, CSRF), signing in and its throttle, the limits a
request's body is read within, and the one shape of every error. It knows neither the API nor
the WebUI; ``balancer.app`` puts the three together.
"""
