"""Logging setup: readable lines for a terminal, or one JSON object per line for a log collector."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO", style: str = "text") -> None:
    """Root logging at level; style 'json' writes JSON lines carrying each record's extra fields
    (user, method, code, milliseconds), 'text' plain lines."""
    handler = logging.StreamHandler()
    if style == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level", "asctime": "time", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
