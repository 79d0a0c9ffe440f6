"""`slidesam-server tokens add|list|revoke`: the admin's command line over the tokens file (tokens.py)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from slidesam.server.edge.tokens import TOKENS_FILE_ENV, TokenRecord, TokenStore, UserLimits, default_tokens_file
from slidesam.server.errors import SlidesamError

MiB = 2**20


def _mib(text: str) -> int:
    """Bytes from a non-negative number of MiB (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of MiB >= 0, got {text!r}")
    return round(value * MiB)


def add_token_commands(subparsers: argparse._SubParsersAction) -> None:
    """Adds `tokens add|list|revoke` to slidesam-server's argparse subparsers."""
    tokens = subparsers.add_parser(
        "tokens", help="issue, list and revoke the bearer tokens users connect with",
        description="Each user connects with their own bearer token. Only a SHA-256 of each token is kept, in "
                    f"--tokens-file (default ${TOKENS_FILE_ENV} or ~/.config/slidesam/tokens.json, mode 0600). "
                    "A running server picks up changes without a restart.",
    )
    commands = tokens.add_subparsers(dest="tokens_command", required=True)
    add = commands.add_parser(
        "add", help="issue a new token for a user and print it once",
        description="Prints the new token on stdout (instructions on stderr). Hand it to the user over a private "
                    "channel: it is not stored and cannot be shown again (issue a new one if it is lost).",
    )
    add.add_argument("user", help="user name: 1-64 letters, digits or . _ @ - (e.g. alice or a.smith@lab)")
    add.add_argument("--max-streams", type=int, metavar="N",
                     help="concurrent interactive streams this user may hold (default: the server's)")
    add.add_argument("--upload-mb-per-minute", type=_mib, metavar="N", dest="upload_bytes_per_minute",
                     help="MiB of images this user may upload per minute, 0 for none (default: the server's)")
    add.add_argument("--note", default="", help="free text shown by `tokens list`, e.g. which machine the token is for")
    add.add_argument("--valid-days", type=float, metavar="DAYS",
                     help="refuse the token after this many days, also on streams it opened before (default: no expiry)")
    listing = commands.add_parser("list", help="show every token: id, user, created, status, limits, note",
                                  description="Shows every token, revoked ones included; never secrets or hashes.")
    revoke = commands.add_parser(
        "revoke", help="revoke one token by id, or every token of a user",
        description="Revokes the token with this id and every token of the user with this name; "
                    "a running server refuses them from its next call.",
    )
    revoke.add_argument("who", metavar="USER_OR_ID", help="a token id as shown by `tokens list`, or a user name")
    for parser in (add, listing, revoke):
        parser.add_argument("--tokens-file", type=Path, default=None,
                            help=f"the tokens file (default: ${TOKENS_FILE_ENV} or ~/.config/slidesam/tokens.json)")
        parser.set_defaults(run=run_tokens_command)


def run_tokens_command(args: argparse.Namespace) -> int:
    """Runs the parsed `tokens` command; prints for the admin; returns the exit code (0 ok, 1 error)."""
    store = TokenStore(args.tokens_file or default_tokens_file())
    try:
        if args.tokens_command == "add":
            limits = UserLimits(args.max_streams, args.upload_bytes_per_minute)
            secret, record = store.add(args.user, limits, args.note, args.valid_days)
            print(secret)
            print(f"token {record.token_id} for {record.user}: hand it to {record.user} over a private channel. "
                  f"It is shown only now and not stored (only its SHA-256 is kept in {store.path}).", file=sys.stderr)
        elif args.tokens_command == "list":
            _print_table(store.records(), store.path)
        else:
            revoked = store.revoke(args.who)
            for record in revoked:
                print(f"revoked token {record.token_id} of {record.user}")
            if not revoked:
                print(f"every token matching {args.who!r} was already revoked")
    except (SlidesamError, OSError) as error:
        print(f"slidesam-server tokens: {error}", file=sys.stderr)
        return 1
    return 0


def _print_table(records: list[TokenRecord], path: Path) -> None:
    if not records:
        print(f"no tokens in {path}")
        return
    rows = [("ID", "USER", "CREATED", "STATUS", "STREAMS", "UPLOAD/MIN", "NOTE")]
    for record in records:
        streams, upload = record.limits.max_streams, record.limits.upload_bytes_per_minute
        rows.append((record.token_id, record.user, record.created,
                     _status(record),
                     "default" if streams is None else str(streams),
                     "default" if upload is None else f"{upload / MiB:g} MiB", record.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _status(record: TokenRecord) -> str:
    if record.revoked is not None:
        return f"revoked {record.revoked}"
    if record.expires is None:
        return "active"
    return f"expired {record.expires}" if record.expired else f"active until {record.expires}"
