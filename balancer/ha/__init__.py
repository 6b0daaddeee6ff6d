"""The clustered HA pair: floating IPs that move between two nodes.

keepalived (Debian's) owns the floating IPs: ``keepalived`` writes its configuration for this
node and runs it; ``role`` turns what keepalived reports into this node's state (Active,
Passive or Fault) and why it changed; ``trust`` is the pair's certificate authority.
"""
