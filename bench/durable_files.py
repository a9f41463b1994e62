"""What the file system alone gives a gateway of small objects: threads each creating a
10 KB file in a hidden sub-directory, fsyncing it, renaming it into the directory and
fsyncing the directory (what storage/localdisk.py does per object), files per second.

    python bench/durable_files.py [--threads 1,4,16] [--seconds 3]

The files go to a new directory under ``BENCH_TMP`` (the gateway's file system by
default) and are kept: removing thousands of files slows the next runs' file creation on
this machine (see README.md); remove ``bench-durable-*`` when a series is over.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

from common import banner, temp_workdir


def run(directory: str, threads: int, seconds: float) -> float:
    hidden = os.path.join(directory, ".incomplete")
    os.makedirs(hidden)
    data = os.urandom(10_000)
    done = [0] * threads
    stop = time.monotonic() + seconds

    def work(index: int) -> None:
        count = 0
        while time.monotonic() < stop:
            temp = os.path.join(hidden, f"{index}-{count}")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            os.replace(temp, os.path.join(directory, f"{index}-{count}"))
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dir_fd)
            os.close(dir_fd)
            count += 1
        done[index] = count

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    banner("durable 10 KB files: create, write, fsync, rename, fsync the directory")
    base = temp_workdir("durable")
    for threads in (int(n) for n in args.threads.split(",")):
        rate = run(str(base / f"t{threads}"), threads, args.seconds)
        print(f"{threads:3d} threads  {rate:7.0f} files/s")
    print(f"kept {base}")


if __name__ == "__main__":
    main()
