"""Alerts: what the node tells its operators when something they must know happens (a real
server down or back, a virtual service with no server left, a failed commit, an engine fault,
an HA role change, split brain), by e-mail, webhook or syslog.

``rules`` says which events alert, ``grouping`` folds a flapping server's alerts into one
message a window, ``channels`` are where messages go and how they are set up, ``send`` moves
the bytes and retries with back-off, ``subscriber`` is the daemon's task that joins them.
"""
