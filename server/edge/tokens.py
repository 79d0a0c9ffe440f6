"""Per-user bearer tokens: stored hashed in a JSON file, managed with `slidesam-server tokens`.

A secret is `ssam_<token_id>_<43 url-safe chars>`: 256 random bits after a prefix that names the
token, so a log line or a leaked secret says which token to revoke. Only its SHA-256 is stored.

The file (mode 0600, in a 0700 directory when created here):

    {"version": 1,
     "tokens": [{"id": "3f9a0c1d", "user": "alice", "sha256": "<64 hex>",
                 "created": "2025-06-01T10:00:00+00:00", "revoked": null, "expires": null,
                 "limits": {"max_streams": 2, "upload_bytes_per_minute": null}, "note": "laptop"}]}

Every change is a read-modify-write under an fcntl lock on `<file>.lock`, written with atomic_write
(a temporary file in the same directory moved into place), so readers never see a partial file and
concurrent admins never lose a record. A running server re-reads the file when it changes.
The `tokens` command that manages the file is in tokens_cli.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from slidesam.atomic_files import atomic_write
from slidesam.server.errors import InvalidArgument, NotFound, SlidesamError

log = logging.getLogger(__name__)

FILE_VERSION = 1
SECRET_PREFIX = "ssam_"
TOKENS_FILE_ENV = "SLIDESAM_TOKENS_FILE"

_USER = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_TOKEN_ID = re.compile(r"[0-9a-f]{8}")
_SECRET = re.compile(SECRET_PREFIX + r"([0-9a-f]{8})_[A-Za-z0-9_-]{43}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_NOTE = 200
MAX_VALID_DAYS = 3650


class TokenFileError(SlidesamError):
    """The tokens file cannot be used: unreadable, corrupt, or writable by others."""


@dataclass(frozen=True)
class UserLimits:
    """Per-user limits; None means the server's default."""

    max_streams: int | None = None              # concurrent Interact streams
    upload_bytes_per_minute: int | None = None  # 0 refuses every upload

    def __post_init__(self) -> None:
        _check_limit("max_streams", self.max_streams, minimum=1)
        _check_limit("upload_bytes_per_minute", self.upload_bytes_per_minute, minimum=0)


@dataclass(frozen=True)
class TokenRecord:
    """What is known about a token; never its secret or hash."""

    token_id: str          # short public id, 8 hex chars, also embedded in the secret
    user: str
    created: str           # ISO-8601 UTC
    revoked: str | None    # ISO-8601 UTC when revoked
    limits: UserLimits
    note: str = ""
    expires: str | None = None  # ISO-8601 UTC after which the token is refused; None: never

    @property
    def active(self) -> bool:
        """Neither revoked nor expired."""
        return self.revoked is None and not self.expired

    @property
    def expired(self) -> bool:
        return self.expires is not None and datetime.fromisoformat(self.expires) <= datetime.now(timezone.utc)


def _check_limit(name: str, value: int | None, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise InvalidArgument(f"{name} must be an integer >= {minimum} (or unset for the server's default), got {value!r}")


def validate_user(user: str) -> str:
    """`user` if it is 1-64 letters, digits or `._@-`; InvalidArgument otherwise."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise InvalidArgument(f"invalid user name {user!r}: use 1-64 letters, digits or . _ @ -")
    return user


def _validate_note(note: str) -> str:
    if not isinstance(note, str) or len(note) > _MAX_NOTE or any(not c.isprintable() for c in note):
        raise InvalidArgument(f"a note is at most {_MAX_NOTE} printable characters on one line")
    return note


def _digest(secret: str) -> str:
    """SHA-256 of the whole secret, hex.

    Not bcrypt/scrypt/argon2: those slow down guessing of low-entropy passwords. A secret here is
    256 bits from `secrets`, so a stolen hash cannot be brute-forced at any speed, while a slow hash
    would cost every RPC milliseconds of CPU (authentication runs on each call).
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_tokens_file() -> Path:
    """$SLIDESAM_TOKENS_FILE, or ~/.config/slidesam/tokens.json."""
    configured = os.environ.get(TOKENS_FILE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".config" / "slidesam" / "tokens.json"


def _parse_record(raw: Any) -> tuple[TokenRecord, str]:
    """A record and its stored hash from one JSON entry; ValueError/TypeError/KeyError when malformed."""
    if not isinstance(raw, dict):
        raise TypeError("a record must be an object")
    limits = raw["limits"]
    if not isinstance(limits, dict):
        raise TypeError("limits must be an object")
    record = TokenRecord(
        token_id=raw["id"], user=raw["user"], created=raw["created"], revoked=raw["revoked"],
        limits=UserLimits(limits["max_streams"], limits["upload_bytes_per_minute"]), note=raw.get("note", ""),
        expires=raw.get("expires"),
    )
    sha256 = raw["sha256"]
    if not isinstance(record.token_id, str) or not _TOKEN_ID.fullmatch(record.token_id):
        raise ValueError(f"bad id {record.token_id!r}")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    validate_user(record.user)
    datetime.fromisoformat(record.created)
    for stamp in (record.revoked, record.expires):
        if stamp is not None and datetime.fromisoformat(stamp).tzinfo is None:
            raise ValueError(f"timestamp {stamp!r} has no time zone")
    _validate_note(record.note)
    return record, sha256


def _to_json(record: TokenRecord, sha256: str) -> dict[str, Any]:
    return {
        "id": record.token_id, "user": record.user, "sha256": sha256, "created": record.created,
        "revoked": record.revoked, "expires": record.expires, "note": record.note,
        "limits": {"max_streams": record.limits.max_streams,
                   "upload_bytes_per_minute": record.limits.upload_bytes_per_minute},
    }


class TokenStore:
    """The tokens in one file; safe to share between threads and between processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._signature: tuple[int, ...] | None = None
        self._entries: dict[str, tuple[TokenRecord, str]] = {}
        self._failure: TokenFileError | None = None

    def add(
        self, user: str, limits: UserLimits = UserLimits(), note: str = "", valid_days: float | None = None
    ) -> tuple[str, TokenRecord]:
        """Creates a token (refused after valid_days, when given); returns the secret (shown once, never
        stored) and its record."""
        validate_user(user)
        _validate_note(note)
        if valid_days is not None and not (math.isfinite(valid_days) and 0 < valid_days <= MAX_VALID_DAYS):
            raise InvalidArgument(f"a token is valid for more than 0 and at most {MAX_VALID_DAYS} days, got {valid_days!r}")
        expires = None
        if valid_days is not None:
            expires = (datetime.now(timezone.utc) + timedelta(days=valid_days)).isoformat(timespec="seconds")
        with self._locked() as entries:
            token_id = secrets.token_hex(4)
            while token_id in entries:
                token_id = secrets.token_hex(4)
            secret = f"{SECRET_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
            record = TokenRecord(token_id, user, _now(), None, limits, note, expires)
            entries[token_id] = (record, _digest(secret))
        log.info("token %s added for user %s", token_id, user)
        return secret, record

    def records(self) -> list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""
        with self._lock:
            self._refresh()
            return [record for record, _ in self._entries.values()]

    def revoke(self, who: str) -> list[TokenRecord]:
        """Revokes the token with id `who` and every token of user `who`; returns those newly revoked.

        Both are revoked when `who` names a token id and a user (revoking too much is the safe side).
        Already revoked tokens are left as they were; NotFound when no token matches at all.
        """
        revoked = []
        with self._locked() as entries:
            matching = [(record, sha256) for record, sha256 in entries.values() if who in (record.token_id, record.user)]
            if not matching:
                raise NotFound(f"no token has id or user {who!r} in {self.path}")
            when = _now()
            for record, sha256 in matching:
                if record.active:
                    revoked.append(dataclasses.replace(record, revoked=when))
                    entries[record.token_id] = (revoked[-1], sha256)
        for record in revoked:
            log.info("token %s of user %s revoked", record.token_id, record.user)
        return revoked

    def authenticate(self, secret: str) -> TokenRecord | None:
        """The active record for a presented secret, or None (unknown, malformed, revoked or expired).

        Re-reads the file when it changed on disk (inode, size, mode, mtime or ctime: an edit that restores
        the mtime still changes the ctime), so a revoke or chmod made by another process applies to the
        next call. Raises TokenFileError while the file is unusable (fail closed).
        """
        match = _SECRET.fullmatch(secret) if isinstance(secret, str) else None
        if match is None:
            return None
        with self._lock:
            self._refresh()
            entry = self._entries.get(match[1])
        if entry is None or not hmac.compare_digest(entry[1], _digest(secret)):
            return None
        return entry[0] if entry[0].active else None

    def _refresh(self, force: bool = False) -> None:
        """Reloads the entries if the file changed since the last load, or always with `force` (caller holds _lock)."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            if self._signature is not None:
                log.warning("tokens file %s was removed: no token is accepted", self.path)
            self._signature, self._entries, self._failure = None, {}, None
            return
        except OSError as error:
            raise TokenFileError(f"cannot read tokens file {self.path}: {error}") from error
        if not force and _signature(status) == self._signature:
            if self._failure is not None:
                raise self._failure
            return
        try:
            with open(self.path, "rb") as file:
                status = os.fstat(file.fileno())
                data = file.read()
        except OSError as error:
            raise TokenFileError(f"cannot read tokens file {self.path}: {error}") from error
        try:
            entries = self._decode(data, status)
        except TokenFileError as error:
            self._signature, self._entries, self._failure = _signature(status), {}, error
            log.error("%s", error)
            raise
        self._signature, self._entries, self._failure = _signature(status), entries, None

    def _decode(self, data: bytes, status: os.stat_result) -> dict[str, tuple[TokenRecord, str]]:
        if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise TokenFileError(f"tokens file {self.path} is writable by group or others, so anyone could add "
                                 f"a token: refusing it (chmod 600 {self.path})")
        if status.st_mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("tokens file %s is readable by group or others (chmod 600 it)", self.path)
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TokenFileError(f"tokens file {self.path} is not valid JSON ({error}): restore it or remove it") from error
        version = document.get("version") if isinstance(document, dict) else None
        if version != FILE_VERSION or not isinstance(document.get("tokens"), list):
            raise TokenFileError(f"tokens file {self.path} is not a version-{FILE_VERSION} slidesam tokens file "
                                 f"(version {version!r}; expected {{\"version\": {FILE_VERSION}, \"tokens\": [...]}})")
        entries = {}
        for index, raw in enumerate(document["tokens"]):
            try:
                record, sha256 = _parse_record(raw)
            except (KeyError, TypeError, ValueError, InvalidArgument) as error:
                detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
                raise TokenFileError(f"tokens file {self.path}: record {index} is malformed ({detail})") from error
            if record.token_id in entries:
                raise TokenFileError(f"tokens file {self.path}: token id {record.token_id} appears twice")
            entries[record.token_id] = (record, sha256)
        return entries

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, tuple[TokenRecord, str]]]:
        """The current entries, under the inter-process lock; written back atomically when the block succeeds."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            with self._lock:
                self._refresh(force=True)  # never trust a cached view for a read-modify-write
                entries = dict(self._entries)
            yield entries
            self._write(entries)
        finally:
            os.close(lock_fd)  # closing releases the flock

    def _write(self, entries: dict[str, tuple[TokenRecord, str]]) -> None:
        document = {"version": FILE_VERSION, "tokens": [_to_json(record, sha256) for record, sha256 in entries.values()]}
        atomic_write(self.path, (json.dumps(document, indent=2) + "\n").encode())  # mode 0600, as mkstemp creates it
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _signature(status: os.stat_result) -> tuple[int, ...]:
    return status.st_dev, status.st_ino, status.st_size, status.st_mode, status.st_mtime_ns, status.st_ctime_ns
