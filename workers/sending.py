"""Campaign sending in child processes, for the embedded broker.

With the embedded broker the workers are threads of ``listwarden serve``. Sending a
campaign is CPU work (rendering, assembling, signing, writing the outbox) that, on threads,
holds the server's GIL most of the time: the event loop then waits its turn for every step
of every request, and a one-click unsubscribe answered while a campaign is sending took
hundreds of milliseconds. So ``start_embedded_worker`` installs a :class:`SendProcesses`:
the ``send_slice`` actor, still run by a worker thread of the server, hands its slice to a
child process and waits for it (without the GIL). Nothing else changes: the child claims,
checks, sends and records through the same ledger and the same database (DESIGN invariant
2 lives in the database: claim-and-check and the opt-out's settle), and a child that dies
leaves ``claimed`` rows that recovery turns into ``unknown``, as a dead worker thread would.

Children are started with ``spawn`` (the server has threads and open connections), on
first use, and ignore SIGINT: a Ctrl-C stops the server, which lets the slices in progress
finish (``close``), as it waits for its worker threads."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from app.config import Settings

log = logging.getLogger("listwarden.delivery")

_current: SendProcesses | None = None
#: How often a child checks that the server is still there.
ORPHAN_POLL_SECONDS = 0.5


class SendProcesses:
    """A pool of ``processes`` child processes that run ``process_slice``."""

    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        self.processes = max(1, processes)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._queued: set[Future[None]] = set()

    def _get_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the sending processes are stopped")
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=get_context("spawn"),
                    initializer=_child_init,
                    initargs=(self.settings,),
                )
            return self._pool

    def run_slice(self, campaign_id: int, lo: int, hi: int) -> None:
        """Send the slice in a child process; returns when it is done (raises what it raised)."""
        pool = self._get_pool()
        future = pool.submit(_child_process_slice, campaign_id, lo, hi)
        with self._lock:
            self._queued.add(future)
        try:
            future.result()
        except CancelledError:
            log.info("slice %s-%s of campaign %s not started: stopping", lo, hi, campaign_id)
        except BrokenProcessPool:
            log.warning("a sending process died; the slice will be retried in a new one")
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            with self._lock:
                self._queued.discard(future)

    def cancel_queued(self) -> None:
        """Stopping: slices not started yet are not started (the ledger keeps their rows
        due; the scheduler sends them again after a restart). Those in progress finish."""
        with self._lock:
            self._closed = True
            for future in list(self._queued):
                future.cancel()

    def close(self) -> None:
        """Let the slices in progress finish, then stop the children."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def install(processes: SendProcesses | None) -> None:
    """Make ``send_slice`` use these processes (None: run slices on the calling thread)."""
    global _current
    _current = processes


def current() -> SendProcesses | None:
    return _current


def _child_init(settings: Settings) -> None:
    from app.config import use_settings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    if settings.embedded_send_nice > 0:
        os.nice(settings.embedded_send_nice)  # the server's requests first
    if settings.embedded_send_batch_size > 0:
        settings = settings.model_copy(update={"send_batch_size": settings.embedded_send_batch_size})
    use_settings(settings)
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), name="listwarden-orphan-watch", daemon=True).start()
    log.debug("sending process %d ready", os.getpid())


def _exit_with(parent: int) -> None:
    """A server that was killed cannot stop its children: they stop when they notice. What
    they had claimed and not recorded becomes ``unknown`` (as with a killed server's threads)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_SECONDS)
    os._exit(1)


def _child_process_slice(campaign_id: int, lo: int, hi: int) -> None:
    from app.delivery.service import process_slice

    process_slice(campaign_id, lo, hi)
