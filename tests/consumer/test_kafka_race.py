"""Two bundler roles in one consumer group on Kafka (librdkafka's mock cluster, or
KAFKAMQ), sharing one database and storage: every plan is bundled exactly once."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import func, select

from bus import OutMessage, Producer
from bus.kafka import KafkaBus
from consumer.events import TOPICS
from consumer.records import treatment_plan_assets
from consumer.role import BundlerRole
from core.services import Services
from core.settings import Settings
from db import Database
from storage import get_storage
from tests.consumer.lab import EVENT_TYPES, AssetFile, Lab, obj_mesh
from tests.fixtures.kafka import CreateTopics
from tests.helpers import wait_for

pytestmark = pytest.mark.kafka
PLANS = 4
JOIN_SECONDS = 1.0
SESSION_TIMEOUT = 3.0


@pytest.fixture
def pair(tmp_path: Path, kafka_bootstrap: str, kafka_topics: CreateTopics, database_url: str,
         bundle_db: Database) -> Iterator[list[Services]]:
    kafka_topics(list(TOPICS))
    settings = Settings.from_env({"WORKDIR": str(tmp_path / "work"), "KAFKAMQ": kafka_bootstrap,
                                  "DATABASE_URL": database_url, "URL_SIGNING_KEY": "k"})
    built = []
    for _ in range(2):
        database = Database(settings.database_url)
        # a short session: the mock's group coordinator waits for it when a member joins
        bus = KafkaBus(settings, session_timeout=SESSION_TIMEOUT)
        built.append(Services(settings, get_storage(settings), database, bus))
    yield built
    for services in built:
        services.close()


def send_event(producer: Producer, kind: str, asset: AssetFile) -> None:
    """What the watcher's outbox delivers."""
    value = {"type": EVENT_TYPES[kind], "file_name": asset.file_name,
             "uncompressed_sha1_hash": asset.sha1, "request_id": asset.request_id}
    message = OutMessage("platform.asset-transfer", asset.request_id, json.dumps(value).encode())
    assert producer.send([message], 10.0) == [True]


def bundles_per_plan(database: Database) -> dict[str, int]:
    a = treatment_plan_assets
    query = select(a.c.plan_uuid, func.count()).where(a.c.status == "done").group_by(a.c.plan_uuid)
    with database.engine.connect() as conn:
        return {plan: count for plan, count in conn.execute(query)}


def test_two_bundlers_on_kafka_bundle_each_plan_once(pair: list[Services]) -> None:
    first = pair[0]
    lab = Lab(first.settings, first.storage, first.database)
    group = f"bundler-{uuid.uuid4().hex[:8]}"
    roles = [BundlerRole(services, group=group, poll_interval=0.05) for services in pair]
    producer = first.bus.producer()
    for services in pair:
        services.relay.start()
    # The second member joins once the first is idle (it reads the topics from the start,
    # earlier tests' messages included): a member that is retrying a commit during a
    # rebalance does not poll, which holds the rebalance up to the session timeout.
    roles[0].start()
    sentinel = lab.file("S0_Step1.obj", uuid.uuid4().bytes, store=False)
    send_event(producer, "created", sentinel)
    assert wait_for(lambda: _recorded(lab, sentinel), 30)
    roles[1].start()
    time.sleep(JOIN_SECONDS)
    salt = uuid.uuid4().int % 10**6  # content unlike any earlier test's
    plans = {str(uuid.uuid4()): [lab.file(f"Q{p}_Step{s}.obj", obj_mesh(salt + 10 * p + s))
                                 for s in (1, 2)] for p in range(PLANS)}
    try:
        for assets in plans.values():
            for asset in assets:
                send_event(producer, "created", asset)
        assert wait_for(lambda: all(_recorded(lab, a) for v in plans.values() for a in v), 30)
        for number, (plan_uuid, assets) in enumerate(plans.items()):
            lab.associate(plan_uuid, assets)  # first for half of the plans, last for the others
            for asset in assets:
                if number % 2:
                    lab.verdict(asset)  # the relay publishes platform.upload.available
                send_event(producer, "uploaded", asset)
        for number, assets in enumerate(plans.values()):
            for asset in assets:
                if not number % 2:
                    lab.verdict(asset)
        assert wait_for(lambda: set(plans) <= set(bundles_per_plan(first.database)), 40), \
            bundles_per_plan(first.database)
        assert wait_for(lambda: first.database.outbox_depth() == 0, 20)
    finally:
        producer.close()
        for role in roles:
            role.stop()
    done = bundles_per_plan(first.database)
    assert {plan_uuid: done[plan_uuid] for plan_uuid in plans} == {plan_uuid: 1 for plan_uuid in plans}
    with first.database.engine.connect() as conn:
        versions = conn.execute(select(treatment_plan_assets.c.version)).scalars().all()
    assert sorted(versions) == [1] * PLANS


def _recorded(lab: Lab, asset: AssetFile) -> bool:
    try:
        lab.transfer_id(asset)
    except Exception:  # noqa: BLE001 - not there yet
        return False
    return True
