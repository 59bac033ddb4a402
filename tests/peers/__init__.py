"""The WSGI-adapter test suites of bridge's peers, run against bridge as external oracles."""
