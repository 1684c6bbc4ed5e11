"""Health per service (NOT_SERVING until its dependencies are ready) and the overall status."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

KNOWLEDGE = "kgverify.v1.KnowledgeService"
INFO_GAIN = "kgverify.v1.InfoGainService"
KNOWLEDGE_BASE = "kgverify.v1.KnowledgeBaseService"
SERVICES = (KNOWLEDGE, INFO_GAIN, KNOWLEDGE_BASE)


class HealthState:
    """Tracks readiness per service and mirrors it into the grpc health servicer."""

    def __init__(self, required: tuple[str, ...] = SERVICES):
        self.servicer = health.aio.HealthServicer()
        self.required = required  # services whose readiness makes the server "" SERVING
        self.loaded: set[str] = set()
        self.serving: dict[str, bool] = {name: False for name in SERVICES}
        self.shutting_down = False

    async def start(self) -> None:
        for name in ("", *SERVICES):
            await self.servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def ready(self, service: str) -> bool:
        """Whether the service finished loading (requests before that get UNAVAILABLE)."""
        return service in self.loaded

    async def set(self, service: str, serving: bool, loaded: bool | None = None) -> None:
        """Sets the health status; a service counts as loaded once SERVING, or when told so.

        A loaded but NOT_SERVING service (e.g. no KB, or a KB that failed to load)
        answers its requests with FAILED_PRECONDITION instead of UNAVAILABLE.
        """
        if self.shutting_down:
            return
        self.serving[service] = serving
        if serving if loaded is None else loaded:
            self.loaded.add(service)
        status = health_pb2.HealthCheckResponse
        await self.servicer.set(service, status.SERVING if serving else status.NOT_SERVING)
        overall = all(self.serving[name] for name in self.required)
        await self.servicer.set("", status.SERVING if overall else status.NOT_SERVING)

    async def shutdown(self) -> None:
        self.shutting_down = True
        await self.servicer.enter_graceful_shutdown()
