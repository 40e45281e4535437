"""Start several services in order and stop them in reverse; used by `agentrt dev`."""

from __future__ import annotations

import atexit
import logging
from types import TracebackType
from typing import Protocol, TypeVar

logger = logging.getLogger(__name__)


class Service(Protocol):
    """What ServiceGroup needs from a service (every Embedded* class fits)."""

    def start(self, timeout: float = ...) -> None: ...
    def stop(self, timeout: float = ...) -> None: ...
    def is_running(self) -> bool: ...


S = TypeVar("S", bound=Service)


class ServiceGroup:
    """Services started in the order added and stopped in reverse order.

    Use it as a context manager, or call start()/stop(). With `stop_at_exit=True`, an atexit hook
    stops whatever is still running when the interpreter exits normally (not after SIGKILL).
    """

    def __init__(self, *services: Service, stop_at_exit: bool = False) -> None:
        self.services: list[Service] = list(services)
        self._stop_at_exit = stop_at_exit
        self._hooked = False

    def add(self, service: S) -> S:
        """Append a service (started by the next start(), or now if the group is already started)."""
        self.services.append(service)
        return service

    def start(self) -> None:
        """Start each service in order; on a failure, stop the ones already started and re-raise."""
        if self._stop_at_exit and not self._hooked:
            atexit.register(self.stop)
            self._hooked = True
        started: list[Service] = []
        try:
            for service in self.services:
                service.start()
                started.append(service)
        except BaseException:
            self._stop_all(reversed(started))
            raise

    def stop(self) -> None:
        """Stop every service in reverse order; one failing to stop does not keep the others running."""
        self._stop_all(reversed(self.services))
        if self._hooked:
            atexit.unregister(self.stop)
            self._hooked = False

    @staticmethod
    def _stop_all(services: reversed[Service]) -> None:
        for service in services:
            try:
                service.stop()
            except Exception:
                logger.exception("could not stop %r", service)

    def __enter__(self) -> ServiceGroup:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
