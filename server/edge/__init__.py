"""The gRPC edge: the servicer (one method per RPC), wire conversion, authentication, tokens, limits, object ownership, metrics, settings and the process that serves them."""
