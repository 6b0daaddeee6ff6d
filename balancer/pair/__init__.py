"""The clustered HA pair at run time on this node: the pieces of ``balancer.ha`` (pure cores
and one-process doors) put to work beside the controller.

``Cluster`` (``cluster.py``) is this node's place in a pair, standalone or one of two: the
daemon makes one at every start and the API and WebUI read it. It runs the node's keepalived
(``heartbeat.py``), hears the peer over mutual TLS (``link.py``), keeps the Secondary in step with
the Primary (``syncer.py``), and pairs or breaks the pair (``pairing.py``).
"""
