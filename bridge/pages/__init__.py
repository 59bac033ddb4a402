"""bridge's own pages, answered before routing and off until a path is given.

- ``dashboard.py``: the Prometheus text and the dashboard (HTML and its JSON).
- ``access.py``: who may read them: loopback by the socket peer, trusted proxies,
  allowed hosts, the dashboard token exchanged for a cookie, the metrics token.
"""
