"""The load test behind scripts/loadtest: simulated users clicking at once on a real server, and its report."""
