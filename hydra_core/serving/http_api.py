"""The HTTP API of ``hydra serve`` (FastAPI): search any served task, put and delete cards.

Every bad request is answered with a JSON body and a 4xx status: an unknown task is 404, a
change without the write key 401 (none sent) or 403 (a wrong one, or a service without a
key: read-only), a change the registry's policy refuses and a card whose corpus is not
encoded 409, a body over :data:`MAX_BODY_BYTES` 413, and a query, ``k`` or card that does
not validate 422, naming the field (and, for a card, its line). A request whose ``Host`` is
not one the service answers to is refused with a plain 400 (a browser page that reached a
loopback server through DNS rebinding). Search handlers are plain functions, so FastAPI runs
them on its thread pool, in parallel.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Annotated, Any

import h11
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from hydra_core.data.cards import MAX_CARD_FILE_BYTES
from hydra_core.errors import HydraInputError
from hydra_core.model.score_fusion import FusionParameters
from hydra_core.serving.fit_queue import FitState, FitStatus
from hydra_core.serving.registry import (
    ChangeRefusedError,
    Hit,
    ServedTask,
    SourceNotEncodedError,
    TaskRegistry,
    UnknownTaskError,
)

MAX_K = FusionParameters(lexical_weight=0.0).candidate_depth
"""Each channel gives a query its top 100 candidates, so 100 hits are always there (on a
corpus that large); a larger ``k`` would be cut to however many the union held."""
MAX_QUERY_CHARS = 2_000
MAX_BATCH_QUERIES = 64
MAX_BODY_BYTES = MAX_CARD_FILE_BYTES
"""The largest card a file may hold is also the largest request body (a full batch of the
longest queries is a quarter of it)."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""The ``Host`` names a service bound to loopback answers to."""
SWAGGER_ASSETS = "/docs/assets"
"""Where the service serves Swagger UI's files (the ``swagger-ui-py`` package's copy, Apache
2.0), so ``/docs`` works without reaching a CDN."""
EXAMPLE_QUERY = "statins and breast cancer"


QueryText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY_CHARS),
]
TopK = Annotated[
    StrictInt, Field(ge=1, le=MAX_K, description="Number of documents to return (1-100).")
]


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": EXAMPLE_QUERY, "k": 5}]}
    )

    query: QueryText = Field(examples=[EXAMPLE_QUERY])
    k: TopK = 10


class BatchSearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"queries": [EXAMPLE_QUERY, "vitamin D"], "k": 5}]},
    )

    queries: list[QueryText] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)
    k: TopK = 10


class SearchResponse(BaseModel):
    task: str
    checkpoint: str
    hits: list[Hit]


class BatchSearchResponse(BaseModel):
    task: str
    checkpoint: str
    results: list[list[Hit]] = Field(description="One ranked list per query, in order.")


class TaskInfo(BaseModel):
    name: str
    source: str
    corpus_size: int
    checkpoint: str = Field(description="The hypernet checkpoint that compiled the card.")
    compiled_at: datetime
    task_bytes: int = Field(description="Memory held by this task alone (not its corpus).")
    adapted: bool = Field(description="Whether it serves a retriever adapted to labels.")
    labelled_queries: int = Field(
        description="The judged queries its retriever was adapted on (0: as compiled)."
    )
    fit: FitState | None = Field(
        description="Where the fit to the card's labels stands: queued, fitting or failed "
        "(meanwhile the compiled retriever serves); none when nothing is pending."
    )
    fit_error: str | None = Field(default=None, description="Why the fit failed.")

    @classmethod
    def of(cls, task: ServedTask, fit: FitStatus | None) -> TaskInfo:
        return cls(
            name=task.card.name,
            source=task.card.source,
            corpus_size=task.corpus.size,
            checkpoint=task.checkpoint,
            compiled_at=task.compiled_at,
            task_bytes=task.searcher.nbytes,
            adapted=task.labelled_queries > 0,
            labelled_queries=task.labelled_queries,
            fit=None if fit is None else fit.state,
            fit_error=None if fit is None else fit.error,
        )


class Health(BaseModel):
    status: str
    tasks: int
    checkpoint: str
    encoder: str
    index: str = Field(description="How the dense channel is searched: exact or hnsw.")


class Problem(BaseModel):
    """What went wrong, in one line; a card's problem also names its field and line."""

    detail: str
    field: str | None = None
    line: int | None = None


class InvalidField(BaseModel):
    loc: list[str | int] = Field(description='Where: "body", then the path of the field.')
    msg: str
    type: str = Field(description="Pydantic's error type, such as missing or int_type.")


class InvalidRequest(BaseModel):
    """A body that does not validate (FastAPI's 422, without the input it echoes)."""

    detail: list[InvalidField]


_TOO_LARGE = "Content Too Large"
Responses = dict[int | str, dict[str, Any]]
_UNKNOWN_TASK: Responses = {404: {"model": Problem, "description": "Unknown task"}}
_BODY_TOO_LARGE: Responses = {413: {"model": Problem, "description": "Body too large"}}
_INVALID_REQUEST: Responses = {422: {"model": InvalidRequest, "description": "Invalid request"}}
_CHANGE_ERRORS: Responses = {
    401: {"model": Problem, "description": "No write key sent"},
    403: {"model": Problem, "description": "A wrong write key, or a read-only service"},
    409: {"model": Problem, "description": "Refused by the service's policy"},
}
_SEARCH_ERRORS: Responses = {**_UNKNOWN_TASK, **_BODY_TOO_LARGE, **_INVALID_REQUEST}
_PUT_RESPONSES: Responses = {
    **_CHANGE_ERRORS,
    **_BODY_TOO_LARGE,
    201: {"model": TaskInfo, "description": "A new task"},
    409: {"model": Problem, "description": "Refused by the policy, or a corpus not encoded"},
    422: {"model": Problem, "description": "An invalid card (its field and line named)"},
}
_DELETE_ERRORS: Responses = {**_CHANGE_ERRORS, **_UNKNOWN_TASK, **_INVALID_REQUEST}
_CARD_BODY = {
    "required": True,
    "description": "A task card, as YAML or JSON (the fields of a card file).",
    "content": {
        "application/yaml": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "object"}},
    },
}


def _card_problem(_: Request, error: Exception) -> JSONResponse:
    """A card's problem, located by line and field (the card has no file to name)."""
    assert isinstance(error, HydraInputError)
    where = [f"line {error.line}"] if error.line is not None else []
    where += [f"field {error.field!r}"] if error.field is not None else []
    problem = Problem(
        detail=f"card ({', '.join(where)}): {error.problem}" if where else f"card: {error.problem}",
        field=error.field,
        line=error.line,
    )
    status = 409 if isinstance(error, SourceNotEncodedError) else 422
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=status)


def _unknown_task(_: Request, error: Exception) -> JSONResponse:
    return JSONResponse(Problem(detail=str(error)).model_dump(exclude_none=True), status_code=404)


def _change_refused(_: Request, error: Exception) -> JSONResponse:
    return JSONResponse(Problem(detail=str(error)).model_dump(exclude_none=True), status_code=409)


def _invalid_request(_: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 body without the input it echoes: an input such as ``NaN``, ``1e400``
    or a lone surrogate cannot be written as JSON, and answering it must not fail."""
    assert isinstance(error, RequestValidationError)
    detail = [
        InvalidField(loc=list(problem["loc"]), msg=str(problem["msg"]), type=str(problem["type"]))
        for problem in error.errors()
    ]
    return JSONResponse(InvalidRequest(detail=detail).model_dump(), status_code=422)


@dataclass(frozen=True)
class Access:
    """Who may change the served tasks, and the ``Host`` names the service answers to.

    Without a ``write_key`` the service is read-only. A change sends the key as
    ``Authorization: Bearer <key>``; it is compared in constant time.
    """

    write_key: str | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS


_BEARER = Depends(HTTPBearer(auto_error=False, description="The service's write key."))
"""At module level: the annotations of a handler's parameters are read from its globals."""


def _writer(access: Access) -> Any:
    """The dependency of every route that changes the tasks."""

    def check(credentials: Annotated[HTTPAuthorizationCredentials | None, _BEARER]) -> None:
        if access.write_key is None:
            raise HTTPException(
                403, "this service is read-only: it was started without a write key"
            )
        if credentials is None:
            raise HTTPException(
                401, "a write key is needed", headers={"WWW-Authenticate": "Bearer"}
            )
        sent, key = credentials.credentials.encode(), access.write_key.encode()
        if not hmac.compare_digest(sent, key):
            raise HTTPException(403, "wrong write key")

    return Depends(check)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with a JSON 413.

    A body declared too long is refused before it is read; one without a declared length
    is counted as it arrives. (FastAPI's own ``max_body_size`` answers the declared case
    in plain text.)
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse(
                Problem(detail=_TOO_LARGE).model_dump(exclude_none=True), status_code=413
            )
            return await response(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # FastAPI's HTTPException handler makes it JSON
                raise HTTPException(status_code=413, detail=_TOO_LARGE)
            return message

        await self.app(scope, counted, send)


def create_app(registry: TaskRegistry, access: Access | None = None) -> FastAPI:
    """The API over ``registry``; interactive docs at ``/docs``, served whole by the service
    (FastAPI's recipe for self-hosting Swagger UI). Read-only on loopback names unless
    ``access`` says otherwise."""
    access = access or Access()
    app = FastAPI(
        title="Hydra",
        summary="Every compiled task behind one search API, sharing one frozen encoder.",
        docs_url=None,
        redoc_url=None,
    )
    swagger = files("swagger_ui") / "static"
    app.mount(SWAGGER_ASSETS, StaticFiles(directory=str(swagger)), name="swagger-assets")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(access.allowed_hosts))
    app.add_exception_handler(HydraInputError, _card_problem)
    app.add_exception_handler(UnknownTaskError, _unknown_task)
    app.add_exception_handler(ChangeRefusedError, _change_refused)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    writer = _writer(access)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that adds a prefix
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{SWAGGER_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{SWAGGER_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=None,
        )

    @app.get("/health")
    def health() -> Health:
        return Health(
            status="ok",
            tasks=len(registry.tasks()),
            checkpoint=registry.checkpoint,
            encoder=registry.encoder.encoder.identity,
            index=registry.index,
        )

    def info(task: ServedTask) -> TaskInfo:
        return TaskInfo.of(task, registry.fits.status(task.card.name))

    @app.get("/tasks")
    def list_tasks() -> list[TaskInfo]:
        return [info(task) for task in registry.tasks()]

    @app.get("/tasks/{name}", responses=_UNKNOWN_TASK)
    def get_task(name: str) -> TaskInfo:
        """One task: what serves it, and whether it is adapted to its card's labels."""
        return info(registry.get(name))

    @app.post("/tasks/{name}/search", responses=_SEARCH_ERRORS)
    def search(name: str, request: SearchRequest) -> SearchResponse:
        """The ``k`` best documents of the task's corpus for one query."""
        task = registry.get(name)
        hits = task.search([request.query], request.k)[0]
        return SearchResponse(task=name, checkpoint=task.checkpoint, hits=hits)

    @app.post("/tasks/{name}/search/batch", responses=_SEARCH_ERRORS)
    def search_batch(name: str, request: BatchSearchRequest) -> BatchSearchResponse:
        """The ``k`` best documents for each of up to 64 queries, in one encoder call."""
        task = registry.get(name)
        results = task.search(request.queries, request.k)
        return BatchSearchResponse(task=name, checkpoint=task.checkpoint, results=results)

    @app.put(
        "/tasks/{name}",
        responses=_PUT_RESPONSES,
        openapi_extra={"requestBody": _CARD_BODY},
        dependencies=[writer],
    )
    async def put_task(name: str, request: Request, response: Response) -> TaskInfo:
        """Compile a card and serve it as task ``name``, replacing the task of that name.

        Its source must be a corpus already served or already in the embedding cache. The
        old task keeps answering until the new one is ready; requests that started on it
        finish on it. A card with ``labels`` (a split of its source folder) answers as
        soon as it is compiled, and its retriever is adapted to those judged queries in
        the background, one fit at a time: ``GET /tasks/{name}`` says when it is.
        """
        body = await request.body()
        task, created = await run_in_threadpool(registry.put, name, body)
        response.status_code = 201 if created else 200
        return info(task)

    @app.delete("/tasks/{name}", status_code=204, responses=_DELETE_ERRORS, dependencies=[writer])
    def delete_task(name: str) -> None:
        """Stop serving task ``name``: its memory is freed once the searches that hold it
        end, its HNSW graph leaves the cache folder, and a fit of it is dropped."""
        registry.delete(name)

    return app


@dataclass(frozen=True)
class ServerLimits:
    """How long a connection may take and how many the server holds.

    ``header_seconds``: a connection whose request headers are not all in within this
    time is closed (uvicorn itself times out only idle connections between requests, so
    connections that never finish their headers would pile up until no file descriptor
    is left). ``keep_alive_seconds``: idle time between requests. ``max_connections``:
    beyond it, new requests get 503 at once.
    """

    header_seconds: float = 10.0
    keep_alive_seconds: float = 5.0
    max_connections: int = 256


class _HeaderTimeout(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose headers come too slowly."""

    header_seconds = ServerLimits().header_seconds
    _late: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._late = self.loop.call_later(self.header_seconds, self._close_if_waiting)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._settle()
        elif self._late is None:  # the first bytes of the next request on a kept connection
            self._late = self.loop.call_later(self.header_seconds, self._close_if_waiting)

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        super().connection_lost(exc)

    def _settle(self) -> None:
        if self._late is not None:
            self._late.cancel()
            self._late = None

    def _close_if_waiting(self) -> None:
        self._late = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def server_config(
    app: FastAPI, host: str, port: int, limits: ServerLimits, **options: Any
) -> uvicorn.Config:
    """uvicorn's configuration of ``app`` within ``limits`` (h11, with its header timeout)."""
    protocol = type("HeaderTimeout", (_HeaderTimeout,), {"header_seconds": limits.header_seconds})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=int(limits.keep_alive_seconds),
        limit_concurrency=limits.max_connections,
        **options,
    )


@contextmanager
def running_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, limits: ServerLimits | None = None
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a background thread; yields its base URL.

    For tests and benchmarks: real HTTP over a real socket, in this process, within the
    service's ``limits``. Port 0 takes any free port.
    """
    config = server_config(
        app, host, port, limits or ServerLimits(), log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="hydra-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join()
