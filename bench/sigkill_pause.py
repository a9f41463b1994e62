"""How long uploads wait for ``platform.upload.available`` across a SIGKILL of the gateway
process, on embedded defaults (``python app.py``: SQLite, the embedded bus, the test
validator): a steady 100 uploads/s for ``--seconds``, the gateway child SIGKILLed at
``--kill-at`` (the supervisor starts it again), then every accepted upload waited for.

    python bench/sigkill_pause.py [--seconds 20] [--kill-at 8] [--rate 100]

Printed: uploads accepted and how many reached ``available``; upload → available p50, p99,
max, and how many took over 5 s, beside the same figures for the uploads accepted before
the kill's second (the run's own baseline). Messages the killed relay had claimed and not
recorded wait until another relay takes them: after their lease (30 s) without a presence,
at once with one (db/presence.py).
"""
from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from common import banner, percentile, remove_workdir, start_gateway, temp_workdir
from latency import AVAILABLE, Collector, Uploader, steady

from core.settings import Settings


def figures(name: str, sent: dict[str, float], seen: dict[str, float]) -> str:
    waits = [seen[k] - t for k, t in sent.items() if k in seen]
    missing = len(sent) - len(waits)
    return (f"{name}: {len(waits)} of {len(sent)} available"
            f"{f' ({missing} MISSING)' if missing else ''}; p50 {1000 * percentile(waits, 50):.0f} ms, "
            f"p99 {1000 * percentile(waits, 99):.0f} ms, max {max(waits, default=0):.2f} s, "
            f"{sum(w > 5 for w in waits)} over 5 s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--kill-at", type=float, default=8)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--wait", type=float, default=60, help="for the last upload")
    args = parser.parse_args()
    banner(f"upload -> available across a SIGKILL of the gateway, {args.rate:.0f} uploads/s, "
           "embedded defaults")
    workdir = temp_workdir("sigkill")
    gateway = start_gateway(workdir)
    try:
        collector = Collector(Settings.from_env({"WORKDIR": str(workdir)}), AVAILABLE)
        collector.start()
        collector.ready.wait(30)
        uploader = Uploader(gateway.base, f"kill{time.monotonic_ns()}")
        started = time.perf_counter()
        killed: list[float] = []

        def kill() -> None:
            time.sleep(args.kill_at)
            os.kill(gateway.gateway_pid, signal.SIGKILL)
            killed.append(time.perf_counter())

        killer = threading.Thread(target=kill)
        killer.start()
        sent = steady(args.rate, args.seconds, uploader)
        killer.join()
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline and not all(k in collector.seen for k in sent):
            time.sleep(0.1)
        collector.stop()
        before = {k: t for k, t in sent.items() if t < started + int(args.kill_at)}
        print(f"killed the gateway at +{killed[0] - started:.1f} s; {uploader.failures} "
              "uploads refused or cut while it restarted (not counted)")
        print(figures("all accepted      ", sent, collector.seen))
        print(figures("baseline: before  ", before, collector.seen))
    finally:
        gateway.stop()
        remove_workdir(workdir)


if __name__ == "__main__":
    main()
