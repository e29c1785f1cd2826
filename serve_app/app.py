"""The FastAPI app and the Ray Serve deployment that hosts it."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from ray import serve

from actors.heap import freeze_startup_heap
from runtime import __version__
from runtime.settings import Settings

from . import diagnostics, errors, health, services
from .auth import BearerAuth
from .body_limit import BodySizeLimit, check_json_body
from .letta import agent_messages, agent_tools, agents, blocks, conversations, runs, tools
from .lifecycle import LifecycleGate
from .openai import routes as openai_routes
from .path_end import PathEnd

MAX_ONGOING_REQUESTS = 2000  # open SSE streams count here; Serve's default of 5 would queue them


def build_app() -> FastAPI:
    app = FastAPI(
        title="Parley",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(check_json_body)],
    )
    errors.install(app)
    app.add_middleware(PathEnd)  # added first, so it runs last: just before routing
    app.add_middleware(BodySizeLimit)
    app.add_middleware(BearerAuth)  # no body is read without the key
    app.add_middleware(LifecycleGate)  # added last, so it runs first: a draining server checks no key
    app.include_router(health.router)
    app.include_router(diagnostics.router)
    for letta_router in (
        agents.router,
        agent_messages.router,
        blocks.router,
        conversations.router,
        runs.router,
        tools.router,
        agent_tools.router,
    ):
        app.include_router(letta_router, responses=errors.LETTA_ERRORS)
    app.include_router(openai_routes.router, responses=errors.OPENAI_ERRORS)
    return app


app = build_app()


@serve.deployment(
    name="ParleyIngress",
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
)
@serve.ingress(app)
class ParleyIngress:
    def __init__(self, settings: Settings) -> None:
        started = services.Services.start(settings)
        started.lifecycle.start()
        services.install(started)
        freeze_startup_heap()
