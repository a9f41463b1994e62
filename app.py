"""Upload gateway entry point.

    python app.py                 every role, each in its own process under a supervisor,
                                  on embedded defaults (--one-process: all in this one)
    python app.py gateway         HTTP API + outbox relay + verdict handler
    python app.py validator NAME  validators: a service, a check (test, archive, mime, obj) or all
    python app.py bundler         the treatment-plan bundler (asset transfers)
    python app.py watcher         the lab-share watcher on WATCH_DIR (+ /metrics, health)
    python app.py redrive SERVICE move SERVICE's dead letters back onto its topic, then exit
    python app.py checksummer     upload areas' workers: checksums, validations, deletions
    python app.py puller          the pull sources of PULL_PROVIDERS (+ jobs API, /metrics, health)
    python app.py keys add NAME --scope SCOPE ...   create an API key (printed once)
    python app.py keys list | keys revoke NAME        list or revoke API keys
    python app.py users add NAME [--org ORG]         add a staff user (password from stdin)
    python app.py users list | users disable NAME     list or disable staff users
    python app.py --help          this list

Configuration comes from the environment (see README.md); a bad value stops start-up with
a message naming the variable.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import socket
import sys
from typing import Any, Callable

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from areas.validation import preflight as areas_preflight
from areas.worker import AreaWorkers
from auth import AuthConfigError
from auth import cli as auth_cli
from auth.setup import preflight as auth_preflight
from bus import get_bus
from bus import preflight as bus_preflight
from consumer.role import BundlerRole
from core import logs
from core.cleanup import Cleanup
from core.consumer import ConsumerLoop
from core.resumable_tasks import ResumableSweeper
from core.services import Services
from core.settings import Settings, SettingsError, env_suffix
from core.supervisor import Child, Supervisor, inherited_sockets
from core.verdicts import VALIDATION_TOPIC, TimeoutSweeper, VerdictHandler
from db import Database, MigrationError
from pull.role import ProviderError, PullRole
from pull.role import preflight as pull_preflight
from pull.store import live_object_keys as pull_object_keys
from upload.app import http_server, make_app
from validators import UnknownValidator, build_loops, preflight, without_validator
from validators.config import validator_config
from validators.redrive import redrive
from watcher.config import preflight as watcher_preflight
from watcher.service import Watcher, status_app

logger = logging.getLogger("app")

ROLES = {
    "all": "every role, each in its own process under a supervisor (the default; "
           "--one-process: all in one process)",
    "gateway": "HTTP API, outbox relay and verdict handler",
    "validator": "validators, named by the next argument: a service, a check or all",
    "bundler": "the treatment-plan bundler: asset transfer events, PROVPREV bundles",
    "watcher": "the lab-share watcher: ingests the files dropped in WATCH_DIR",
    "redrive": "move the dead letters of the service named next back onto its topic "
               "(validators/redrive.py), then exit",
    "puller": "the pull sources: fetches the files of the providers in PULL_PROVIDERS",
    "checksummer": "the upload areas' workers: checksums of staged files, validations of "
                   "file sets, deletions (areas/worker.py)",
}
# Body chunks handed to the upload handler (and socket reads) of up to 1 MiB instead of
# Tornado's 64 KiB: 16 times fewer passes through the parser and the handler per byte
# (bench/large_upload.py). Memory per upload stays bounded by the ingest path.
READ_CHUNK = 1024 * 1024
# Request headers: up to 1 MiB (a tus concatenation), 431 past 64 KiB elsewhere (upload/app.py).


# the processes of the supervised all-in-one (python app.py): the gateway (with the watcher
# and the puller when configured: they answer on its port), the validators, the bundler,
# the upload areas' workers
PARTS = ("gateway", "validators", "bundler", "checksummer")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="app.py", description="Upload gateway",
        epilog="roles:\n" + "\n".join(f"  {k:<10} {v}" for k, v in ROLES.items())
        + "\n\ncredentials (see README, Authentication):\n"
        + "  keys add NAME --scope SCOPE [--scope ...] | keys list | keys revoke NAME\n"
        + "  users add NAME [--org ORG] | users list | users disable NAME",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("role", nargs="?", default="all", choices=sorted(ROLES))
    parser.add_argument("name", nargs="?",
                        help="validator name (role validator), service (role redrive)")
    parser.add_argument("--idle", type=float, default=10.0, metavar="SECONDS",
                        help="redrive: stop after this long without a dead letter (10)")
    parser.add_argument("--one-process", action="store_true",
                        help="role all: every role in this one process (default: each role "
                             "in its own process under a supervisor)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="gateway: N processes on one port (default WEB_CONCURRENCY or 1)")
    args = parser.parse_args(argv)
    if args.workers is None:  # WEB_CONCURRENCY (as Heroku and others set it): the gateway's
        value = (os.environ.get("WEB_CONCURRENCY", "") if args.role == "gateway" else "")
        value = value.strip() or "1"
        try:
            args.workers = int(value)
        except ValueError:
            parser.error(f"WEB_CONCURRENCY must be a whole number, got {value!r}")
    if args.workers < 1:
        parser.error("--workers/WEB_CONCURRENCY must be at least 1")
    args.part = None  # set in a supervisor's child (run_all)
    if args.one_process and args.role != "all":
        parser.error("--one-process is for role all")
    if args.workers > 1 and args.role != "gateway":
        parser.error("--workers/WEB_CONCURRENCY is for role gateway")
    if args.role == "validator" and not args.name:
        parser.error("role validator needs a name: a service, a check (test, archive, mime, "
                     "obj) or all")
    if args.role == "redrive" and not args.name:
        parser.error("role redrive needs the service whose dead letters to move")
    return args


def run_redrive(settings: Settings, service: str, idle: float) -> int:
    try:
        config = validator_config(settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    known = set(settings.valid_upload_types) | set(config.checks) | set(config.commands)
    if service not in known:
        print(f"configuration error: no service {service!r}; known: {', '.join(sorted(known))}",
              file=sys.stderr)
        return 2
    bus = get_bus(settings)
    try:
        result = redrive(bus, service, idle)
    finally:
        bus.close()
    print(f"redrive {service}: {result.moved} moved, {result.passed_over} passed over"
          + (f"; stopped: {result.failed}" if result.failed else ""))
    return 1 if result.failed else 0


class ListenError(Exception):
    """LISTEN_ADDRESS / LISTEN_PORT cannot be listened on (taken, unknown address)."""


def listen(server: HTTPServer, settings: Settings) -> None:
    inherited = inherited_sockets()  # a supervisor's worker: its socket is made already
    if inherited is not None:
        server.add_sockets(inherited)
        return
    try:
        server.listen(settings.listen_port, settings.listen_address)
    except OSError as exc:  # socket.gaierror included: an address that does not resolve
        where = f"{settings.listen_address or '*'}:{settings.listen_port}"
        raise ListenError(f"LISTEN_ADDRESS/LISTEN_PORT: cannot listen on {where}: "
                          f"{exc.strerror or exc}") from None


class Runtime:
    """Starts the asked roles on one Services, and stops them in order."""

    def __init__(self, services: Services, pull: PullRole | None = None) -> None:
        self.services = services
        self.pull = pull
        self.server: HTTPServer | None = None
        self.stoppers: list[Callable[[], Any]] = []
        self.watcher: Watcher | None = None

    def start_gateway(self) -> None:
        settings = self.services.settings
        self.server = http_server(
            make_app(self.services, self.pull.routes() if self.pull else None),
            idle_connection_timeout=settings.http_idle_timeout,
            body_timeout=settings.http_body_timeout,
            max_body_size=settings.max_length + 4 * 1024 * 1024, xheaders=True,
            chunk_size=READ_CHUNK,
        )
        listen(self.server, settings)
        verdicts = VerdictHandler(settings, self.services.storage, self.services.database,
                                  self.services.relay.wake)
        loop = ConsumerLoop(self.services.bus, "upload-gateway", [VALIDATION_TOPIC], verdicts)
        loop.start()
        sweeper = TimeoutSweeper(verdicts, settings.validation_timeout)
        sweeper.start()
        self.stoppers += [loop.stop, sweeper.stop]
        if self.services.resumable is not None:
            # the puller's downloads own resumable quarantine objects too (pull/download.py),
            # whichever process runs them
            engine = self.services.database.engine
            tus_sweeper = ResumableSweeper(self.services.resumable, owners=[
                functools.partial(pull_object_keys, engine)])
            tus_sweeper.start()
            self.stoppers.append(tus_sweeper.stop)
        cleanup = Cleanup(settings, self.services.storage, self.services.database)
        cleanup.start()
        self.stoppers.append(cleanup.stop)
        logger.info("gateway listening on port %d (storage %s, bus %s)", settings.listen_port,
                    settings.storage_driver, "kafka" if settings.kafka_servers else "embedded")

    def start_validator(self, name: str) -> None:
        settings = self.services.settings
        for validator in build_loops(settings, self.services.bus, name):
            validator.start()
            self.stoppers.append(validator.stop)
            logger.info("validator for %s running", validator.service)
        if name == "all":  # the all-in-one process: nothing else will validate
            self.services.without_validator = without_validator(settings)
            for service in self.services.without_validator:
                logger.warning(
                    "service %s has no validator in this process (VALIDATORS, "
                    "VALIDATOR_COMMAND_%s): its uploads wait for an external validator on "
                    "platform.upload.%s or their callback URL, and are rejected after "
                    "VALIDATION_TIMEOUT (%ds)", service, env_suffix(service), service,
                    settings.validation_timeout)

    async def start_watcher(self, serve_status: bool) -> None:
        """The watcher; alone in its process it also serves /metrics and health."""
        self.watcher = Watcher(self.services)
        await self.watcher.start()
        if serve_status:
            settings = self.services.settings
            self.server = http_server(status_app(self.services))
            listen(self.server, settings)

    def start_area_workers(self, serve_status: bool) -> None:
        """The upload areas' workers; alone in its process it also serves /metrics and
        health."""
        workers = AreaWorkers(self.services)
        workers.start()
        self.stoppers.append(workers.stop)
        if serve_status:
            self.server = HTTPServer(status_app(self.services))
            listen(self.server, self.services.settings)
        logger.info("upload area workers running")

    def start_bundler(self) -> None:
        bundler = BundlerRole(self.services)
        bundler.start()
        self.stoppers.append(bundler.stop)
        logger.info("bundler running")

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()
        if self.pull is not None:
            await self.pull.stop()
        if self.server is not None:
            self.server.stop()
            try:
                await asyncio.wait_for(self._drain(), self.services.settings.shutdown_grace)
            except TimeoutError:
                logger.warning("%d uploads still in flight after %.0fs; closing them",
                               self.services.inflight, self.services.settings.shutdown_grace)
                await self._close_inflight()
        for stop in reversed(self.stoppers):
            stop()
        self.services.close()

    async def _close_inflight(self) -> None:
        """Close the connections of uploads still in flight: each removes what it wrote
        (its handler's abort), so that nothing of this process is left for clean-up."""
        assert self.server is not None
        try:
            await asyncio.wait_for(self.server.close_all_connections(), 5)
            await self.services.wait_background(5)
        except TimeoutError:
            logger.warning("partial uploads not all removed at stop; clean-up will")

    async def _drain(self) -> None:
        """Let in-flight uploads finish (new connections are refused already), then
        close what is left (idle keep-alive connections)."""
        assert self.server is not None
        while self.services.inflight > 0:
            await asyncio.sleep(0.05)
        await self.server.close_all_connections()


async def serve(args: argparse.Namespace, settings: Settings,
                providers: dict[str, Any] | None = None) -> None:
    services = Services.build(settings)
    runtime = Runtime(services, PullRole(services, providers) if providers else None)
    services.relay.start()
    services.health.start()
    # role all runs every part here (--one-process) or one part (--part, a supervisor's child)
    part: str | None = args.part if args.role == "all" else None

    def runs(name: str) -> bool:
        return args.role == name or (args.role == "all" and part in (None, name))

    front = args.role == "all" and part in (None, "gateway")  # the all-in-one's HTTP side
    if runs("gateway"):
        runtime.start_gateway()
    if args.role == "all" and part in (None, "validators"):
        runtime.start_validator("all")
    elif args.role == "validator":
        runtime.start_validator(args.name)
    if front and part is not None:  # the validators run in a sibling process: health says it
        runtime.services.without_validator = without_validator(settings)
    if runs("bundler"):
        runtime.start_bundler()
    if runs("checksummer"):
        runtime.start_area_workers(serve_status=args.role == "checksummer")
    if args.role == "watcher" or (front and settings.watch_dir is not None):
        await runtime.start_watcher(serve_status=args.role == "watcher")
    if runtime.pull is not None and (args.role == "puller" or front):
        await runtime.pull.start(serve_status=args.role == "puller")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("stopping: finishing %d in-flight uploads", services.inflight)
    await runtime.stop()
    logger.info("stopped")


def run_credentials(argv: list[str]) -> int:
    """``python app.py keys ...``: on the configured database (migrated first)."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    database = Database(settings.database_url)
    try:
        database.migrate()
        return auth_cli.run(argv, database.engine)
    except MigrationError as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 1
    finally:
        database.close()


APP = os.path.abspath(__file__)


def reuse_port_sockets(settings: Settings) -> Callable[[], list[socket.socket]]:
    """A factory of listening sockets on LISTEN_PORT bound with SO_REUSEPORT, one set per
    start of a supervisor's gateway process (a restarted one binds beside one still dying
    of a SIGKILL), after a first bind here that fails start-up once when the port cannot
    be had."""
    address = settings.listen_address or None

    def sockets() -> list[socket.socket]:
        try:
            return bind_sockets(settings.listen_port, address, reuse_port=True)
        except OSError as exc:
            where = f"{settings.listen_address or '*'}:{settings.listen_port}"
            raise ListenError(f"LISTEN_ADDRESS/LISTEN_PORT: cannot listen on {where}: "
                              f"{exc.strerror or exc}") from None

    for sock in sockets():
        sock.close()
    return sockets


def supervise(settings: Settings, children: list[Child]) -> int:
    """Migrate the database once, then run ``children`` under the supervisor (forked: no
    thread may run in this process before)."""
    database = Database(settings.database_url)
    try:
        database.migrate()
    finally:
        database.close()
    return Supervisor(children).run()


def run_workers(args: argparse.Namespace, settings: Settings,
                providers: dict[str, Any] | None) -> int:
    """``python app.py gateway --workers N``: N gateway processes, each with its own event
    loop, database engine, relay and verdict consumer, on sockets bound with SO_REUSEPORT
    to one port (the kernel spreads the connections), under the supervisor."""
    sockets = reuse_port_sockets(settings)
    one = argparse.Namespace(**{**vars(args), "workers": 1})
    children = [Child(f"gateway-{i + 1}", functools.partial(run_serve, one, settings, providers),
                      sockets=sockets) for i in range(args.workers)]
    logger.info("gateway: %d worker processes on port %d", args.workers, settings.listen_port)
    return supervise(settings, children)


def run_all(args: argparse.Namespace, settings: Settings,
            providers: dict[str, Any] | None) -> int:
    """``python app.py``: every role, each in its own process (``PARTS``) under the
    supervisor, so that the roles do not share one interpreter and its GIL."""
    sockets = reuse_port_sockets(settings)
    children = [Child(part, functools.partial(
        run_serve, argparse.Namespace(**{**vars(args), "part": part}), settings, providers),
        sockets=sockets if part == "gateway" else None) for part in PARTS]
    logger.info("all roles, one process each: %s", ", ".join(PARTS))
    return supervise(settings, children)


def run_serve(args: argparse.Namespace, settings: Settings,
              providers: dict[str, Any] | None) -> int:
    try:
        asyncio.run(serve(args, settings, providers))
    except MigrationError as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 1
    except ListenError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in auth_cli.COMMANDS:
        return run_credentials(argv)
    args = parse_args(argv)
    try:
        logs.configure(json_lines=logs.json_from_env(os.environ))
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        bus_preflight(settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        auth_preflight(settings.env, settings.workdir)
    except AuthConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.role in ("all", "validator"):
        try:
            preflight(settings, args.name if args.role == "validator" else "all")
        except (UnknownValidator, FileNotFoundError, SettingsError) as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    if args.role in ("gateway", "checksummer"):  # "all": the validators' preflight did it
        try:
            areas_preflight(settings, installed=args.role == "checksummer")
        except (FileNotFoundError, SettingsError) as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    if args.role == "redrive":
        return run_redrive(settings, args.name, args.idle)
    if args.role == "watcher" or (args.role == "all" and settings.watch_dir is not None):
        try:
            watcher_preflight(settings)
        except SettingsError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    try:
        providers = pull_preflight(settings)
    except ProviderError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.role == "puller" and not providers:
        print("configuration error: role puller needs PULL_PROVIDERS", file=sys.stderr)
        return 2
    try:
        if args.workers > 1:
            return run_workers(args, settings, providers)
        if args.role == "all" and args.part is None and not args.one_process:
            return run_all(args, settings, providers)
    except MigrationError as exc:
        print(f"database error: {exc}", file=sys.stderr)
        return 1
    except ListenError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return run_serve(args, settings, providers)


if __name__ == "__main__":
    sys.exit(main())
