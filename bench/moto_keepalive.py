"""moto's S3 (and every other moto service) behind Tornado's HTTP/1.1 server, which keeps
connections alive: for benchmarks only, where moto stands in for S3.

``python -m moto.server`` serves through werkzeug's development server, which answers
every request with ``Connection: close`` (werkzeug/serving.py: http.server cannot drain a
request body before the next request line) and starts a thread per connection. So every
boto3 call of the system under test opened a new TCP connection (getaddrinfo, socket,
connect: ~15 % of the gateway's samples under bench/scaleout.py), and moto spent its CPU
on a thread per connection too; real S3 keeps connections alive, and botocore's pool
reuses them. Here moto's own WSGI application (``DomainDispatcherApplication``, as its
``main`` builds it) runs under ``tornado.wsgi.WSGIContainer`` with a small thread pool:
one process, keep-alive connections, the same moto code answering (its package directory
listed once instead of on every request).

    python bench/moto_keepalive.py [-H 127.0.0.1] [-p PORT] [--threads 4]

Prints nothing; serves until SIGTERM/SIGINT. Tornado buffers each request and response
body in memory (``--max-body-mib``, 1024 by default): fine for the small uploads of the
scale-out bench, not for multi-GiB single PUTs (bench/s3_upload.py keeps moto's own server).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import tornado.httpserver
import tornado.wsgi


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-body-mib", type=int, default=1024)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server's main does
    asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> None:
    import moto.backends
    from moto.server import DomainDispatcherApplication, create_backend_app

    # moto's dispatcher lists its package directory (listdir + an isdir per entry) for
    # every request, under a lock, to see whether the host names a service: 12 % of moto's
    # samples in the scale-out bench. The list is the installed package's: list it once.
    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    logging.getLogger("tornado.access").disabled = True  # a line per request costs CPU
    app = DomainDispatcherApplication(create_backend_app)
    executor = ThreadPoolExecutor(args.threads, thread_name_prefix="moto")
    container = tornado.wsgi.WSGIContainer(app, executor=executor)  # type: ignore[arg-type]
    server = tornado.httpserver.HTTPServer(
        container, max_body_size=args.max_body_mib << 20, idle_connection_timeout=60)
    server.listen(args.port, args.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    executor.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    main()
