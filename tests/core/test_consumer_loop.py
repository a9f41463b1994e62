import json
import threading

from bus import OutMessage
from bus.local import LocalBus
from core.consumer import ConsumerLoop, MalformedMessage
from core.settings import Settings
from storage import StorageUnavailable
from tests.helpers import wait_for


def test_loop_skips_junk_retries_transient_and_commits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bus = LocalBus(Settings.from_env({"WORKDIR": str(tmp_path)}))
    producer = bus.producer()
    values = [b"\x00junk", json.dumps({"n": 1}).encode(), json.dumps({"bad": True}).encode(),
              json.dumps({"n": 2}).encode()]
    assert all(producer.send([OutMessage("t", "k", v) for v in values], 5))
    seen: list[int] = []
    failures = {"left": 2}
    lock = threading.Lock()

    def handler(data, message):  # type: ignore[no-untyped-def]
        if data.get("bad"):
            raise MalformedMessage("bad")
        with lock:
            if data["n"] == 2 and failures["left"]:
                failures["left"] -= 1
                raise StorageUnavailable("try again")
            seen.append(data["n"])

    loop = ConsumerLoop(bus, "g", ["t"], handler)
    loop.start()
    try:
        assert wait_for(lambda: seen == [1, 2], 10)
    finally:
        loop.stop()
    # everything was committed: a new member of the group sees nothing
    consumer = bus.consumer("g", ["t"])
    assert consumer.poll(0.3) is None
    consumer.close()
    producer.close()
    bus.close()


def test_batch_handler_gets_what_is_fetched_and_falls_back_one_by_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bus = LocalBus(Settings.from_env({"WORKDIR": str(tmp_path)}))
    producer = bus.producer()
    values = [json.dumps({"n": n}).encode() for n in range(5)]
    values.insert(2, b"\x00junk")
    assert all(producer.send([OutMessage("t", "k", v) for v in values], 5))
    batches: list[list[int]] = []
    singles: list[int] = []

    class Handler:
        def __call__(self, data, message):  # type: ignore[no-untyped-def]
            singles.append(data["n"])

        def handle_batch(self, batch):  # type: ignore[no-untyped-def]
            batches.append([data["n"] for data in batch])
            if len(batches) == 1:
                raise StorageUnavailable("the whole batch fails once")

    loop = ConsumerLoop(bus, "g", ["t"], Handler())
    loop.start()
    try:
        assert wait_for(lambda: singles == [0, 1, 2, 3, 4], 10)
        assert batches == [[0, 1, 2, 3, 4]]  # junk skipped, the rest in one batch
        assert all(producer.send([OutMessage("t", "k", json.dumps({"n": 9}).encode())], 5))
        assert wait_for(lambda: batches[-1] == [9], 10)
    finally:
        loop.stop()
    consumer = bus.consumer("g", ["t"])
    assert consumer.poll(0.3) is None  # all committed
    consumer.close()
    producer.close()
    bus.close()
