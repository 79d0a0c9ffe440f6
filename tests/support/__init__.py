"""Helpers shared by the tests only: fuzzing strategies, TLS certificates and QuPath."""
