"""The fault run of issue 10 with the note's setting: a steady load of multipart uploads
for about ``--minutes`` (10) on two gateways, two validators and a bundler, while S3, the
brokers and PostgreSQL are each cut for ``--cut`` seconds (30), a gateway is SIGKILLed and
restarted, and an oversized verdict and 100 malformed messages are published. Prints the
figures and exits 1 when a 202'd upload was lost, rejected by the timeout, announced twice
on ``platform.upload.available`` or stored with other bytes than the client sent.

Needs PostgreSQL on 127.0.0.1:5432 (database ``test``, trust auth; the run makes and drops a
database of its own, and cuts only its own TCP proxy in front of the server). What runs
and what is counted: tests/faults/fault_run.py; a short version runs in the suite
(tests/faults/test_fault_run.py).

    python bench/fault_run.py --minutes 10 [--cut 30] [--rate 6] [--keep]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.fault_run import Phases, problems, report, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--cut", type=float, default=30.0, help="seconds of each outage")
    parser.add_argument("--rate", type=float, default=6.0, help="uploads a second")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    phases = Phases.for_minutes(args.minutes, cut=args.cut, rate=args.rate, clients=args.clients)
    print(f"phases: {phases}", flush=True)
    figures = run(phases, keep=args.keep)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    found = problems(figures)
    for problem in found:
        print(f"FAILED: {problem}")
    if not found:
        print("every 202 kept: 0 lost, 0 rejected by timeout, 0 duplicates on available, "
              "every perm object's sha256 the client's")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
