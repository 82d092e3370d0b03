"""A worker's admin and monitoring HTTP: /healthz, /readyz, /metrics, /model and POST /switch_model.

aiohttp (already installed as faust-streaming's web server) runs inside the worker's
event loop, so a switch request reaches the running `ModelSlot` directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumers.model_slot import ModelSlot
from stream.errors import SwitchRefused
from stream.metrics import WorkerMetrics

REFUSAL_STATUS = {
    "unknown_model": 404, "busy": 409, "same_model": 409, "too_soon": 429, "registry_unreadable": 503,
}


def _json(body: dict, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def admin_app(slot: ModelSlot, metrics: WorkerMetrics, running: Callable[[], bool]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if not running():
            return _json({"ready": False, "why": "not consuming"}, 503)
        if slot.runner is None:
            # Still serving through the degradation path; ready to take traffic, not at full quality.
            return _json({"ready": True, "model": None, "switching_to": slot.gate.switching_to})
        return _json({"ready": True, "model": slot.model_id})

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def model(_: web.Request) -> web.Response:
        return _json({"model": slot.model_id, "loaded": slot.runner is not None,
                      "switching_to": slot.gate.switching_to, "last_error": slot.last_error})

    async def switch_model(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            model_id = body["model_id"]
            if not isinstance(model_id, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"error": "bad_request", "detail": 'send {"model_id": "<registry id>"}'}, 400)
        try:
            slot.request_switch(model_id)
        except SwitchRefused as refused:
            headers = {"Retry-After": str(int(refused.retry_after_s) + 1)} if refused.retry_after_s else None
            return _json({"error": refused.code, "detail": refused.detail}, REFUSAL_STATUS[refused.code], headers)
        return _json({"switching_to": model_id, "from": slot.model_id}, 202)

    app = web.Application()
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_page),
        web.get("/model", model),
        web.post("/switch_model", switch_model),
    ])
    return app


@contextlib.asynccontextmanager
async def admin_server(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve `app` in this event loop; yields the bound port (useful with port 0)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
