"""The REST API: everything the WebUI and the ``balancer`` command do goes through it."""
