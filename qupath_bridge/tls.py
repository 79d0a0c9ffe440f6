"""How the bridge reaches a server over TLS: the CA to trust and, for mutual TLS, its own certificate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsSettings:
    """How to reach a TLS server: the CA that signed its certificate (None: the system's roots) and,
    for mutual TLS, this client's certificate and key (PEM files)."""

    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(read(self.ca), read(self.client_key), read(self.client_cert))
