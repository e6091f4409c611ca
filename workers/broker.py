"""The Dramatiq broker chosen by ``LISTWARDEN_BROKER_URL``.

``embedded`` (default): an in-process broker whose workers run as threads of ``listwarden
serve``; the delivery ledger, not the broker, is the record of work, so nothing is lost
with the process. ``redis://…`` or ``amqp://…``: a shared broker and ``listwarden worker``
processes on any number of hosts. Actor modules import this module first, so the broker is
set before any actor is declared."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from app.config import Settings, get_settings

if TYPE_CHECKING:
    from workers.sending import SendProcesses

#: Every module that declares actors; ``listwarden worker`` imports them all.
ACTOR_MODULES: list[str] = ["workers.campaigns", "workers.inbound", "workers.imports"]


def _middleware() -> list[dramatiq.Middleware]:
    return [
        AgeLimit(),
        TimeLimit(time_limit=30 * 60 * 1000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=20, min_backoff=1000, max_backoff=5 * 60 * 1000),
    ]


def make_broker(settings: Settings | None = None) -> dramatiq.Broker:
    settings = settings or get_settings()
    url = settings.broker_url
    if settings.embedded_broker:
        broker: dramatiq.Broker = StubBroker(middleware=_middleware())
        broker.emit_after("process_boot")
        return broker
    if url.startswith(("redis://", "rediss://", "unix://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url, middleware=_middleware(), namespace=settings.broker_namespace)
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, middleware=_middleware())
    raise ValueError(f"unsupported LISTWARDEN_BROKER_URL {url!r} (embedded, redis://…, amqp://…)")


broker = make_broker()
dramatiq.set_broker(broker)


def import_actors() -> None:
    import importlib

    for module in ACTOR_MODULES:
        importlib.import_module(module)


class EmbeddedWorker(dramatiq.Worker):
    """The worker threads of an embedded broker; campaign slices go to child processes
    (``workers.sending``) when the settings ask for them."""

    def __init__(self, *args: Any, sending: SendProcesses | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sending = sending

    def start(self) -> None:
        if self.sending is not None:
            from workers import sending

            sending.install(self.sending)
        super().start()

    def stop(self, timeout: int = 600_000) -> None:
        if self.sending is not None:
            self.sending.cancel_queued()
        super().stop(timeout)  # the slices in progress finish (their threads wait for them)
        if self.sending is not None:
            from workers import sending

            if sending.current() is self.sending:
                sending.install(None)
            self.sending.close()


def start_embedded_worker(threads: int = 4, settings: Settings | None = None) -> dramatiq.Worker | None:
    """Start worker threads in this process when the broker is embedded."""
    if not isinstance(broker, StubBroker):
        return None
    import_actors()
    settings = settings or get_settings()
    processes = None
    if settings.embedded_send_processes > 0:
        from workers.sending import SendProcesses

        processes = SendProcesses(settings, settings.embedded_send_processes)
    worker = EmbeddedWorker(broker, worker_threads=threads, worker_timeout=100, sending=processes)
    worker.start()
    return worker
