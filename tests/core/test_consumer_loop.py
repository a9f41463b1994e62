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
