"""Which polled messages a validator loop may commit: per partition, in poll order, up to
the oldest one that is not finished yet."""
from __future__ import annotations

import collections
import threading

from bus import Message

Ident = tuple[str, int, int]  # topic, partition, offset


class Pending:
    """Polled messages per partition and assignment generation, in poll order, and which
    of them are finished.

    A partition that comes back to this member (a rebalance, a lease taken back) starts
    a new generation: its messages are polled again from the committed offset, into a
    queue of their own, and the old queue's commits are refused by the consumer as stale.
    A message polled again while it is still in flight is not started twice: the new
    entry shares the old one's fate (finished when it finishes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._order: dict[tuple[str, int, int], collections.deque[Message]] = {}
        self._refs: dict[Ident, int] = {}  # queue entries per message
        self._queued: set[tuple[str, int, int, int]] = set()  # (topic, partition, gen, offset)
        self._done: set[Ident] = set()

    def add(self, message: Message) -> bool:
        """Track ``message``; False when it is tracked already (do not start it again)."""
        ident = (message.topic, message.partition, message.offset)
        key = (message.topic, message.partition, message.generation)
        entry = (*key, message.offset)
        with self._lock:
            known = ident in self._refs
            if entry not in self._queued:
                self._queued.add(entry)
                self._order.setdefault(key, collections.deque()).append(message)
                self._refs[ident] = self._refs.get(ident, 0) + 1
            return not known

    def finish(self, message: Message) -> None:
        with self._lock:
            self._done.add((message.topic, message.partition, message.offset))

    def committable(self) -> list[Message]:
        """Per queue, the last message of the finished prefix (removed from tracking)."""
        out = []
        with self._lock:
            for key, queue in list(self._order.items()):
                last = None
                while queue and (ident := (queue[0].topic, queue[0].partition,
                                           queue[0].offset)) in self._done:
                    last = queue.popleft()
                    self._queued.discard((*key, last.offset))
                    self._refs[ident] -= 1
                    if not self._refs[ident]:
                        del self._refs[ident]
                        self._done.discard(ident)
                if last is not None:
                    out.append(last)
                if not queue:
                    del self._order[key]
        return out
