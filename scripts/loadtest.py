"""Load test: simulated users click at the same time on shared and own fields of view of a real server.

Run through ./scripts/loadtest. Starts `slidesam-server serve` in its own process on a free loopback
port (or targets a running one with --address), with one token per simulated user, so every user is
a distinct user to the scheduler's fairness. The slides are a few generated synthetic slides (whose
object is known: positives land inside it, negatives outside) and the real CMU-1-Small-Region.

Each user opens an object on its field of view (an encode on a cache miss), clicks --clicks times with
a jittered --think-ms pause before each click, now and then undoes one, finishes, and starts the next
object on the same field of view, for --objects objects or until --duration seconds have passed.
About --shared-fraction of the users share two fields of view (embedding cache hits after the first
open), the others have one each. --batch-users more users meanwhile run `Segment` calls on fresh fields
of view (an encode each), as pre-annotation would.

Reports per-click latency measured by the client (wall time of `click`) and the server's own queue and
decode times, throughput, opens, errors by status code, and the server's memory (peak and current RSS),
and ends with one JSON line.

With --backends 1,2 the same users run through HAProxy (deploy/haproxy/slidesam.cfg) in front of 1, then 2
servers on this machine, each a fresh stack (torch threads: the cores shared out among the servers, unless
--server-arg sets --threads); the JSON line then holds one report per stack under "runs".
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from slidesam.lab.loadtest.balanced import run_balanced
from slidesam.lab.local_server import LocalServer
from slidesam.lab.loadtest.report import build_report, summary_lines
from slidesam.lab.loadtest.targets import write_slides
from slidesam.lab.loadtest.users import Workload, make_users, measure, shared_count, warm_up
from slidesam.server.edge.tokens import TokenStore
from slidesam.server.models.registry import DEFAULT_MODEL, ModelRegistry

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=32, help="simulated interactive users, one token each (default 32)")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per object (default 10)")
    parser.add_argument("--objects", type=int, default=3,
                        help="objects per user, so a user makes at most clicks x objects clicks (default 3)")
    parser.add_argument("--duration", type=float, default=120.0,
                        help="seconds the measured phase may last; users stop clicking then (default 120)")
    parser.add_argument("--think-ms", type=float, default=300.0,
                        help="a user's pause before each click, jittered by +-50%% (default 300)")
    parser.add_argument("--shared-fraction", type=float, default=0.5,
                        help="share of the users on the two shared fields of view (the real slide and a synthetic "
                             "one); the others get one each (default 0.5)")
    parser.add_argument("--batch-users", type=int, default=0,
                        help="users running batch Segment calls on fresh fields of view meanwhile (default 0)")
    parser.add_argument("--slides", type=int, default=3, help="synthetic slides to write (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of click positions and think times (default 0)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                        help="extra flag for `slidesam-server serve`, written with '=': --server-arg=--max-batch=1 "
                             "(repeatable)")
    parser.add_argument("--server-log", type=Path, default=ROOT / "demo-output" / "loadtest-server.log",
                        help="the started server's log (default demo-output/loadtest-server.log)")
    parser.add_argument("--address", metavar="HOST:PORT",
                        help="load a running server instead of starting one (needs --slide-root; memory only with --server-pid)")
    parser.add_argument("--token", action="append", default=[],
                        help="with --address: bearer token(s), handed to the users in turn (default $SLIDESAM_TOKEN); "
                             "users sharing a token are one user to the server's fairness")
    parser.add_argument("--slide-root", type=Path,
                        help="the server's slide root; the slides go into a new folder in it, removed afterwards "
                             "(default: a temporary directory, which the started server serves)")
    parser.add_argument("--server-pid", type=int, help="with --address: the server's process id, to read its memory")
    parser.add_argument("--backends", type=backend_counts, metavar="N[,N...]",
                        help="run through HAProxy in front of N local servers, once per N (e.g. 1,2); needs haproxy")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line on stdout (progress stays on stderr)")
    args = parser.parse_args(argv)
    problems = [
        "--users must be >= 1" if args.users < 1 else "",
        "--clicks and --objects must be >= 1" if min(args.clicks, args.objects) < 1 else "",
        "--duration must be > 0" if args.duration <= 0 else "",
        "--think-ms and --batch-users must be >= 0" if min(args.think_ms, args.batch_users) < 0 else "",
        "--shared-fraction must be within [0, 1]" if not 0 <= args.shared_fraction <= 1 else "",
        "--slides must be >= 1 and --seed >= 0" if args.slides < 1 or args.seed < 0 else "",
        "--address needs --slide-root (the running server's)" if args.address and not args.slide_root else "",
        "--server-arg is for the started server, not --address" if args.address and args.server_arg else "",
        "--token and --server-pid go with --address" if not args.address and (args.token or args.server_pid) else "",
        "--backends starts its own servers: not with --address" if args.address and args.backends else "",
    ]
    if any(problems):
        parser.error("; ".join(p for p in problems if p))
    return args


def backend_counts(text: str) -> list[int]:
    """'1,2' -> [1, 2]: the numbers of backends to run through the balancer."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("every number of backends must be >= 1")
    return counts


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped on SIGTERM too
    server: LocalServer | None = None
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="slidesam-loadtest-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        slide_root = args.slide_root or work / "slides"
        slide_root.mkdir(parents=True, exist_ok=True)
        note(f"writing {args.slides} synthetic slides and CMU-1-Small-Region under {slide_root}")
        slides = write_slides(slide_root, args.slides)
        cleanup.callback(shutil.rmtree, slides.folder, ignore_errors=True)
        shared = shared_count(args.users, args.shared_fraction)
        if args.backends:
            ModelRegistry.create(device="cpu").fetch(DEFAULT_MODEL)
            store = TokenStore(work / "tokens.json")
            users, batch, warm = make_users(slides, lambda name: store.add(name, note="loadtest")[0], args.users, shared,
                                            args.batch_users, args.seed)
            reports = run_balanced(args, slides, store.path, users, batch, warm, work)
            if not args.json_only:
                for report in reports:
                    print("\n".join(summary_lines(report)) + f"\nrequests per backend: {report['requests_per_backend']}\n")
            print(json.dumps({"benchmark": "loadtest-balanced", "runs": reports}))
            return
        if args.address:
            address, pid, metrics_port = args.address, args.server_pid, None
            tokens = itertools.cycle(args.token or [None])
            users, batch, warm = make_users(slides, lambda name: next(tokens), args.users, shared, args.batch_users, args.seed)
        else:
            ModelRegistry.create(device="cpu").fetch(DEFAULT_MODEL)
            store = TokenStore(work / "tokens.json")
            users, batch, warm = make_users(slides, lambda name: store.add(name, note="loadtest")[0], args.users, shared,
                                            args.batch_users, args.seed)
            note(f"starting the server (log: {args.server_log})")
            server = cleanup.enter_context(LocalServer(slide_root, args.server_log, tokens_file=store.path, metrics=True,
                                                       extra_args=args.server_arg))
            address, pid, metrics_port = server.address, server.pid, server.metrics_port
        note(f"server at {address}; warm-up, then {args.users} users + {args.batch_users} batch for at most {args.duration:g} s")
        warm_up(address, warm, slides)
        measured = measure(address, slides, users, batch, Workload(args.clicks, args.objects, args.think_ms), args.duration,
                           pid, metrics_port)
    report = build_report(args, measured, server.exit_code if server else None)
    if not args.json_only:
        print("\n".join(summary_lines(report)))
    print(json.dumps(report))

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
