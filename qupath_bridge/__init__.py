"""The QuPath side: a gRPC client of the server and the bridge that turns QuPath projects and clicks into annotations. Never imports the server or torch."""
