"""The HTTP API of ``hydra serve`` (FastAPI): search any served task, put new cards.

Every bad request is answered with a JSON body and a 4xx status: an unknown task is 404, a
card whose corpus is not encoded 409, a body over :data:`MAX_BODY_BYTES` 413, and a query,
``k`` or card that does not validate 422, naming the field (and, for a card, its line).
Search handlers are plain functions, so FastAPI runs them on its thread pool, in parallel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydra_core.data.cards import MAX_CARD_FILE_BYTES
from hydra_core.errors import HydraInputError
from hydra_core.serving.registry import (
    Hit,
    ServedTask,
    SourceNotEncodedError,
    TaskRegistry,
    UnknownTaskError,
)

MAX_K = 1000
MAX_QUERY_CHARS = 2_000
MAX_BATCH_QUERIES = 64
MAX_BODY_BYTES = MAX_CARD_FILE_BYTES
"""The largest card a file may hold is also the largest request body (a full batch of the
longest queries is a quarter of it)."""

QueryText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY_CHARS),
]
TopK = Annotated[int, Field(ge=1, le=MAX_K, description="Number of documents to return.")]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: QueryText
    k: TopK = 10


class BatchSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

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

    @classmethod
    def of(cls, task: ServedTask) -> TaskInfo:
        return cls(
            name=task.card.name,
            source=task.card.source,
            corpus_size=task.corpus.size,
            checkpoint=task.checkpoint,
            compiled_at=task.compiled_at,
            task_bytes=task.searcher.nbytes,
        )


class Health(BaseModel):
    status: str
    tasks: int
    checkpoint: str
    encoder: str
    index: str = Field(description="How the dense channel is searched: exact or hnsw.")


class Problem(BaseModel):
    detail: str
    field: str | None = None
    line: int | None = None


_TOO_LARGE = "Content Too Large"
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem} for status in (404, 409, 413, 422)
}
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


def create_app(registry: TaskRegistry) -> FastAPI:
    """The API over ``registry``; interactive docs at ``/docs``."""
    app = FastAPI(
        title="Hydra",
        summary="Every compiled task behind one search API, sharing one frozen encoder.",
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_exception_handler(HydraInputError, _card_problem)
    app.add_exception_handler(UnknownTaskError, _unknown_task)

    @app.get("/health")
    def health() -> Health:
        return Health(
            status="ok",
            tasks=len(registry.tasks()),
            checkpoint=registry.checkpoint,
            encoder=registry.encoder.encoder.identity,
            index=registry.index,
        )

    @app.get("/tasks")
    def list_tasks() -> list[TaskInfo]:
        return [TaskInfo.of(task) for task in registry.tasks()]

    @app.post("/tasks/{name}/search", responses=_ERRORS)
    def search(name: str, request: SearchRequest) -> SearchResponse:
        """The ``k`` best documents of the task's corpus for one query."""
        task = registry.get(name)
        hits = task.search([request.query], request.k)[0]
        return SearchResponse(task=name, checkpoint=task.checkpoint, hits=hits)

    @app.post("/tasks/{name}/search/batch", responses=_ERRORS)
    def search_batch(name: str, request: BatchSearchRequest) -> BatchSearchResponse:
        """The ``k`` best documents for each of up to 64 queries, in one encoder call."""
        task = registry.get(name)
        results = task.search(request.queries, request.k)
        return BatchSearchResponse(task=name, checkpoint=task.checkpoint, results=results)

    @app.put(
        "/tasks/{name}",
        responses={**_ERRORS, 201: {"model": TaskInfo, "description": "A new task"}},
        openapi_extra={"requestBody": _CARD_BODY},
    )
    async def put_task(name: str, request: Request, response: Response) -> TaskInfo:
        """Compile a card and serve it as task ``name``, replacing the task of that name.

        Its source must be a corpus already served or already in the embedding cache. The
        old task keeps answering until the new one is ready; requests that started on it
        finish on it.
        """
        body = await request.body()
        task, created = await run_in_threadpool(registry.put, name, body)
        response.status_code = 201 if created else 200
        return TaskInfo.of(task)

    return app


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a background thread; yields its base URL.

    For tests and benchmarks: real HTTP over a real socket, in this process. Port 0 takes
    any free port.
    """
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
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
