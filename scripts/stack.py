"""Starts the whole interactive stack on this machine: N `slidesam-server serve` processes on loopback
ports behind HAProxy, configured by deploy/haproxy/slidesam.cfg (its server and bind lines filled in),
and keeps it up until Ctrl-C or SIGTERM. Clients connect to the balancer's address; every server reads
the same slide root and tokens file. Needs `haproxy` (Debian: apt-get install haproxy).

Each server gets `--threads` CPU threads for torch (default: this machine's cores divided among them);
add any other `serve` flag with --server-arg. The generated config, the balancer's log and each server's
log are in --work (printed at start).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from slidesam.lab.haproxy import TEMPLATE, HaproxyMissing
from slidesam.lab.stack import Stack


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", type=int, default=2, help="slidesam-server processes (default 2)")
    parser.add_argument("--port", type=int, default=50051, help="the balancer's loopback port (default 50051; 0: a free one)")
    parser.add_argument("--slide-root", type=Path, required=True, help="the servers' slide root")
    parser.add_argument("--tokens-file", type=Path, help="the tokens file every server reads (default: anonymous access)")
    parser.add_argument("--threads", type=int, help="torch CPU threads per server (default: cores / backends, at least 1)")
    parser.add_argument("--tls-pem", type=Path,
                        help="terminate TLS at the balancer with this PEM file (server certificate, then its key)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                        help="extra flag for every `slidesam-server serve`, written with '=': --server-arg=--cache-mb=2048")
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="the HAProxy config template (default %(default)s)")
    parser.add_argument("--work", type=Path, help="folder for the config and the logs (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.backends < 1 or not 0 <= args.port < 65536 or (args.threads is not None and args.threads < 1):
        parser.error("--backends and --threads must be >= 1, --port within 0-65535")
    if not args.slide_root.is_dir():
        parser.error(f"--slide-root {args.slide_root} is not a folder")
    return args


def main() -> None:
    args = parse_args()
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.backends)
    work = args.work or Path(tempfile.mkdtemp(prefix="slidesam-stack-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"starting {args.backends} servers ({threads} torch threads each) and HAProxy; config and logs in {work}", flush=True)
    try:
        with Stack(args.slide_root, work, args.backends, port=args.port, tokens_file=args.tokens_file,
                   server_args=["--threads", str(threads), *args.server_arg], tls_pem=args.tls_pem, template=args.template) as stack:
            for backend in stack.backends:
                print(f"  {backend.name} at {backend.address} (pid {stack.servers[backend.name].pid})")
            print(f"balancer at {stack.address} ({'TLS' if args.tls_pem else 'plaintext HTTP/2'}); Ctrl-C stops everything", flush=True)
            signal.pause()
    except HaproxyMissing as missing:
        sys.exit(f"stack: {missing}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
