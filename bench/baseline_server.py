"""The bare Tornado baseline the benchmarks compare the gateway with.

    python bench/baseline_server.py PORT DIR

``POST /raw``: ``@stream_request_body``, each chunk written to a new file under DIR as it
arrives (no parsing, no hashing, no fsync), then 202: the issue's baseline. For the
analysis only, ``/raw?durable=1`` also fsyncs the file before answering and
``/raw?durable=1&sha256=1`` also hashes each chunk (on the event loop, as a bare handler
would): what the gateway's guarantees cost without its parsing and pipeline.
``POST /noop``: the body is read and dropped, then the same 202 JSON the gateway sends.
``GET /health``: 200.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import uuid

import tornado.web
from tornado.httpserver import HTTPServer


@tornado.web.stream_request_body
class RawHandler(tornado.web.RequestHandler):
    def initialize(self, directory: str) -> None:
        self.directory = directory
        self.file = None

    def prepare(self) -> None:
        self.request.connection.set_max_body_size(8 * 1024 ** 3)
        self.file = open(os.path.join(self.directory, uuid.uuid4().hex), "wb")
        self.durable = self.get_query_argument("durable", "") == "1"
        self.sha256 = hashlib.sha256() if self.get_query_argument("sha256", "") == "1" else None

    def data_received(self, chunk: bytes) -> None:
        if self.sha256 is not None:
            self.sha256.update(chunk)
        self.file.write(chunk)

    def post(self) -> None:
        if self.durable:
            self.file.flush()
            os.fsync(self.file.fileno())
        self.file.close()
        self.set_status(202)
        self.finish(json.dumps({"request_id": uuid.uuid4().hex}))


@tornado.web.stream_request_body
class NoopHandler(tornado.web.RequestHandler):
    def data_received(self, chunk: bytes) -> None:
        pass

    def post(self) -> None:
        self.set_status(202)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"request_id": uuid.uuid4().hex,
                                "upload": {"account_number": None, "org_id": None}}))


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish("ok")


async def main(port: int, directory: str) -> None:
    app = tornado.web.Application([
        (r"/raw", RawHandler, {"directory": directory}),
        (r"/noop", NoopHandler),
        (r"/health", HealthHandler),
    ], log_function=lambda handler: None)
    server = HTTPServer(app, max_body_size=8 * 1024 ** 3, body_timeout=600)
    server.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
