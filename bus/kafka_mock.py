"""A Kafka-protocol cluster on loopback: librdkafka's mock cluster, reached through ctypes
in the librdkafka bundled with the confluent-kafka wheel. For tests and benchmarks only.

The mock cluster lives inside an ``rd_kafka_t`` handle, which must outlive it: ``close``
destroys the cluster, then the handle. Brokers are numbered 1..N and listen on loopback
ports chosen by the kernel.

Known limits of the mock (librdkafka 2.x): it does not implement the CreateTopics admin
request, so use ``create_topic`` (the controller id is set so that the admin request fails
at once with UNSUPPORTED_FEATURE instead of timing out). It auto-creates an unknown topic
on Produce, and on a Metadata request that allows auto-creation, with 4 partitions. The
initial group rebalance delay is 0 ms so that consumers join quickly, but a member joining
after another left (LeaveGroup) waits for the group's session timeout: give test
consumers a short ``session.timeout.ms``.

Run as ``python -m bus.kafka_mock [--brokers N] TOPIC...``: prints the bootstrap servers
on its first line, then serves until SIGTERM/SIGINT; SIGUSR1 takes every broker down,
SIGUSR2 brings them back.
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import logging
import os
import signal
import threading

import confluent_kafka

logger = logging.getLogger(__name__)

_V = ctypes.c_void_p
_RD_KAFKA_PRODUCER = 0
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _declare(lib: ctypes.CDLL) -> None:
    lib.rd_kafka_conf_new.restype = _V
    lib.rd_kafka_conf_set.argtypes = [_V, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_size_t]
    lib.rd_kafka_new.restype = _V
    lib.rd_kafka_new.argtypes = [ctypes.c_int, _V, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_destroy.argtypes = [_V]
    lib.rd_kafka_mock_cluster_new.restype = _V
    lib.rd_kafka_mock_cluster_new.argtypes = [_V, ctypes.c_int]
    lib.rd_kafka_mock_cluster_destroy.argtypes = [_V]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [_V]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_mock_topic_create.argtypes = [_V, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_broker_set_down.restype = ctypes.c_int
    lib.rd_kafka_mock_broker_set_down.argtypes = [_V, ctypes.c_int32]
    lib.rd_kafka_mock_broker_set_up.restype = ctypes.c_int
    lib.rd_kafka_mock_broker_set_up.argtypes = [_V, ctypes.c_int32]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [_V, ctypes.c_int32]
    lib.rd_kafka_mock_set_controller_id.argtypes = [_V, ctypes.c_int32]
    lib.rd_kafka_err2str.restype = ctypes.c_char_p
    lib.rd_kafka_err2str.argtypes = [ctypes.c_int]


def _librdkafka() -> ctypes.CDLL:
    """The librdkafka shared object shipped in the confluent-kafka wheel."""
    global _lib
    with _lib_lock:
        if _lib is None:
            pkg = os.path.dirname(confluent_kafka.__file__)
            found = glob.glob(os.path.join(pkg, "..", "confluent_kafka.libs", "librdkafka*.so*"))
            if not found:
                raise RuntimeError("librdkafka not found beside confluent_kafka (not a wheel?)")
            lib = ctypes.CDLL(found[0])
            _declare(lib)
            _lib = lib
        return _lib


class MockKafkaCluster:
    """librdkafka's in-process mock cluster: ``start()``, use ``bootstrap``, ``close()``."""

    def __init__(self) -> None:
        self._lib = _librdkafka()
        self._rk: int | None = None
        self._mc: int | None = None
        self._brokers = 0
        self._bootstrap = ""

    def start(self, brokers: int = 1) -> MockKafkaCluster:
        if self._mc is not None:
            raise RuntimeError("mock cluster already started")
        err = ctypes.create_string_buffer(512)
        conf = self._lib.rd_kafka_conf_new()
        self._lib.rd_kafka_conf_set(conf, b"log_level", b"0", err, len(err))
        rk = self._lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, err, len(err))
        if not rk:
            raise RuntimeError(f"rd_kafka_new failed: {err.value.decode()}")
        mc = self._lib.rd_kafka_mock_cluster_new(rk, brokers)
        if not mc:
            self._lib.rd_kafka_destroy(rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self._rk, self._mc, self._brokers = rk, mc, brokers
        self._lib.rd_kafka_mock_group_initial_rebalance_delay_ms(mc, 0)
        self._lib.rd_kafka_mock_set_controller_id(mc, 1)  # CreateTopics then fails fast
        self._bootstrap = self._lib.rd_kafka_mock_cluster_bootstraps(mc).decode()
        logger.info("mock Kafka cluster with %d broker(s) on %s", brokers, self._bootstrap)
        return self

    @property
    def bootstrap(self) -> str:
        if self._mc is None:
            raise RuntimeError("mock cluster not started")
        return self._bootstrap

    @property
    def brokers(self) -> int:
        return self._brokers

    def create_topic(self, name: str, partitions: int = 1, replication: int = 1) -> None:
        """Create ``name``; an existing topic is left as it is."""
        code = self._lib.rd_kafka_mock_topic_create(self._handle(), name.encode(), partitions,
                                                    replication)
        if code and code != confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
            raise RuntimeError(f"mock topic {name!r}: {self._lib.rd_kafka_err2str(code).decode()}")

    def set_down(self) -> None:
        """Take every broker down: connections are closed and new ones refused."""
        for broker in range(1, self._brokers + 1):
            self._lib.rd_kafka_mock_broker_set_down(self._handle(), broker)

    def set_up(self) -> None:
        for broker in range(1, self._brokers + 1):
            self._lib.rd_kafka_mock_broker_set_up(self._handle(), broker)

    def close(self) -> None:
        """Destroy the cluster, then the handle it lives in (idempotent)."""
        mc, rk = self._mc, self._rk
        self._mc = self._rk = None
        if mc is not None:
            self._lib.rd_kafka_mock_cluster_destroy(mc)
        if rk is not None:
            self._lib.rd_kafka_destroy(rk)

    def _handle(self) -> int:
        if self._mc is None:
            raise RuntimeError("mock cluster not started")
        return self._mc

    def __enter__(self) -> MockKafkaCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(cluster: MockKafkaCluster) -> None:
    """Block until SIGTERM/SIGINT; SIGUSR1 takes the brokers down, SIGUSR2 brings them up."""
    signals = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2]
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    while True:
        received = signal.sigwait(signals)
        if received == signal.SIGUSR1:
            cluster.set_down()
        elif received == signal.SIGUSR2:
            cluster.set_up()
        else:
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bus.kafka_mock",
                                     description="librdkafka's mock Kafka cluster on loopback")
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("topics", nargs="*")
    args = parser.parse_args(argv)
    cluster = MockKafkaCluster().start(args.brokers)
    try:
        for topic in args.topics:
            cluster.create_topic(topic, args.partitions)
        print(cluster.bootstrap, flush=True)
        _serve(cluster)
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
