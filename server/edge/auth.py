"""Who is calling: a bearer token from the request metadata, checked against the admin's token file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

from slidesam.server.errors import Unauthenticated, Unavailable
from slidesam.server.edge.tokens import TokenFileError, TokenStore, UserLimits

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
AUTHORIZATION = "authorization"


@dataclass(frozen=True)
class User:
    """An authenticated caller and the limits that apply to them."""

    name: str
    max_streams: int
    upload_bytes_per_minute: int


class Authenticator:
    """Maps request metadata to a User, or refuses with UNAUTHENTICATED.

    With allow_anonymous, a request without an authorization header is the user 'anonymous'; a request
    that presents a token is always checked, so a wrong token never silently becomes anonymous.
    """

    def __init__(self, tokens: TokenStore | None, allow_anonymous: bool, default_limits: UserLimits):
        if tokens is None and not allow_anonymous:
            raise ValueError("a server without a token file must allow anonymous access explicitly")
        self.tokens = tokens
        self.allow_anonymous = allow_anonymous
        self.defaults = default_limits

    def identify(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> User:
        headers = [value for key, value in metadata or () if key == AUTHORIZATION]
        if len(headers) > 1:
            raise Unauthenticated(f"the request carries {len(headers)} authorization headers: send exactly one")
        header = headers[0] if headers else None
        if header is None:
            if self.allow_anonymous:
                return self._user(ANONYMOUS, UserLimits())
            raise Unauthenticated(
                "this server needs a token: send the metadata 'authorization: Bearer <token>' "
                "(the server's admin creates one with `slidesam-server tokens add USER`)"
            )
        scheme, _, secret = (header.decode("latin-1") if isinstance(header, bytes) else header).strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("malformed authorization metadata: expected 'Bearer <token>'")
        if self.tokens is None:
            raise Unauthenticated("this server has no token file and accepts anonymous requests only: send no token")
        try:
            record = self.tokens.authenticate(secret.strip())
        except TokenFileError as error:
            log.error("cannot check tokens: %s", error)
            raise Unavailable("the server cannot read its token file; ask its admin to check the server log") from error
        if record is None:
            raise Unauthenticated("unknown, revoked or expired token")
        return self._user(record.user, record.limits)

    def _user(self, name: str, limits: UserLimits) -> User:
        def pick(own: int | None, default: int | None) -> int:
            return own if own is not None else (default if default is not None else 0)

        return User(
            name,
            pick(limits.max_streams, self.defaults.max_streams),
            pick(limits.upload_bytes_per_minute, self.defaults.upload_bytes_per_minute),
        )
