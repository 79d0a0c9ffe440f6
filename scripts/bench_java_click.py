"""Per-click round trip from the Java client (the jar QuPath loads) versus the Python client, one loopback server.

Run through ./scripts/bench_java_click. One server in its own process (real MobileSAM, the real
CMU-1-Small-Region slide at x10); both clients open an object on the same field of view, so every
timed click reuses the same cached embedding. Each timed click is the same positive click followed by
an untimed undo, so every click does the same server work. Rounds interleave the clients (the order
alternates) after warm-up clicks that let Java's JIT compile the hot path. The Node client is timed
too when Node and clients/node/node_modules are present. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from slidesam.lab.demo_object import CLICKS, MAGNIFICATION, REGION, SLIDE_ID, demo_fov
from slidesam.lab.local_server import LocalServer
from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.server.slides.samples import fetch_cmu_small_region

ROOT = Path(__file__).resolve().parent.parent
JAVA_JAR = ROOT / "clients/java/build"
GSON = Path("/usr/share/java/gson.jar")


class Driver:
    """A conformance driver process (Java or Node) answering JSON lines."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        if not reply["ok"]:
            raise RuntimeError(f"{request['op']}: {reply['code']}: {reply['message']}")
        return reply

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def java_driver() -> Driver:
    subprocess.run([str(ROOT / "scripts/build_java_client")], check=True, stdout=subprocess.DEVNULL)
    jar = next(JAVA_JAR.glob("slidesam-qupath-client-*.jar"))
    classes = JAVA_JAR / "test-classes"
    sources = [str(p) for p in (ROOT / "clients/java/src/test/java").rglob("*.java")]
    subprocess.run(["javac", "--release", "17", "-cp", f"{jar}:{GSON}", "-d", str(classes), *sources], check=True)
    return Driver(["java", "-cp", f"{jar}:{GSON}:{classes}", "org.slidesam.conformance.ConformanceDriver"])


def node_driver() -> Driver | None:
    if shutil.which("node") is None or not (ROOT / "clients/node/node_modules").is_dir():
        return None
    return Driver(["node", str(ROOT / "clients/node/conformance_driver.js")])


def python_clicks(session, x: float, y: float, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        session.click(x, y, True)
        times.append((time.perf_counter() - started) * 1e3)
        session.undo()
    return times


def stats(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), float(np.percentile(np.asarray(times), 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--clicks", type=int, default=5, help="timed clicks per client per round")
    parser.add_argument("--warmup", type=int, default=40, help="untimed clicks per client first (JIT warm-up)")
    parser.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where the slide and server log go")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    slide_path = fetch_cmu_small_region(args.workdir / "slides")
    drivers = {"java": java_driver()}
    node = node_driver()
    if node is not None:
        drivers["node"] = node
    log = args.workdir / "bench-java-server.log"
    print(f"starting the server (log: {log})")
    fov_json = {"slide_id": SLIDE_ID, "region": list(REGION), "magnification": MAGNIFICATION}
    x, y = CLICKS[0].x, CLICKS[0].y
    times: dict[str, list[float]] = {"python": [], **{name: [] for name in drivers}}
    try:
        with LocalServer(slide_path.parent, log, device="cpu") as server, SlidesamClient(server.address) as client:
            with client.open_object(demo_fov()) as session:
                for driver in drivers.values():
                    driver.ask(op="connect", address=server.address)
                    driver.ask(op="open", fov=fov_json)
                    driver.ask(op="bench", x=x, y=y, n=args.warmup)
                python_clicks(session, x, y, args.warmup)
                order = ["python", *drivers]
                for round_index in range(args.rounds):
                    for name in order if round_index % 2 == 0 else order[::-1]:
                        if name == "python":
                            times[name] += python_clicks(session, x, y, args.clicks)
                        else:
                            times[name] += drivers[name].ask(op="bench", x=x, y=y, n=args.clicks)["ms"]
    finally:
        for driver in drivers.values():
            driver.close()

    summary = {"benchmark": "bench_java_click", "machine": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "java": _version(["java", "-version"]), "clicks_timed_per_client": len(times["python"]),
               "warmup_clicks": args.warmup}
    print(f"\n{'client':<10}{'p50 ms':>10}{'p95 ms':>10}")
    for name, values in times.items():
        p50, p95 = stats(values)
        summary[f"{name}_p50_ms"], summary[f"{name}_p95_ms"] = p50, p95
        print(f"{name:<10}{p50:>10.1f}{p95:>10.1f}")
    for name in drivers:
        summary[f"{name}_over_python_p50"] = summary[f"{name}_p50_ms"] / summary["python_p50_ms"]
        summary[f"{name}_over_python_p95"] = summary[f"{name}_p95_ms"] / summary["python_p95_ms"]
    print(f"Java / Python: p50 {summary['java_over_python_p50']:.3f}x, p95 {summary['java_over_python_p95']:.3f}x (goal <= 1.10x)")
    print(json.dumps(summary))


def _version(command: list[str]) -> str:
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    return (output.stderr or output.stdout).splitlines()[0]


if __name__ == "__main__":
    main()
