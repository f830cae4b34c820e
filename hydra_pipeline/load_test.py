"""A bounded load test of ``hydra serve`` on 127.0.0.1: searches while a card is replaced.

Several clients search two served tasks, each sending its next request as soon as the last
is answered, for a fixed time and at most a fixed number of requests, while a third card is
PUT and then replaced by edited versions of itself; once it is served the clients search it
too. The report counts the requests answered, those answered with an error status and those
dropped (never answered), their latency, and the same for the requests in flight while a
PUT compiled and swapped the third task. The target: no error and no drop at all.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from urllib.parse import quote, urlsplit

import numpy as np

from hydra_core.data.cards import TaskCard


@dataclass(frozen=True)
class LoadReport:
    clients: int
    seconds: float
    requests: int
    """Searches answered (any status)."""
    errors: int
    """Searches answered with a status other than 200."""
    dropped: int
    """Searches sent and never answered (connection closed or timed out)."""
    qps: float
    p50_ms: float
    p99_ms: float
    puts: list[int]
    """The status of each PUT of the third card, in order (0: no answer)."""
    during_puts: int
    """Searches in flight while a PUT was being answered."""
    failed_during_puts: int
    """Of those, the ones with an error status or no answer."""


@dataclass(frozen=True)
class _Outcome:
    started: float
    ended: float
    status: int  # 0: no answer


def local_address(base_url: str) -> tuple[str, int]:
    """Host and port of ``base_url``, which must be on 127.0.0.1."""
    parts = urlsplit(base_url)
    if parts.hostname != "127.0.0.1" or parts.port is None:
        raise ValueError(f"the load test runs against http://127.0.0.1:<port> only, not {base_url}")
    return parts.hostname, parts.port


def _send(
    connection: HTTPConnection,
    method: str,
    path: str,
    body: str,
    kind: str,
    key: str | None = None,
) -> int:
    """One request on a kept-alive connection (with the write ``key``, if any); 0 when no
    answer came back."""
    headers = {"Content-Type": kind}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, path, body.encode("utf-8"), headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, HTTPException):
        connection.close()  # the next request reconnects
        return 0


def run_load_test(
    base_url: str,
    tasks: Sequence[str],
    card: TaskCard,
    queries: Sequence[str],
    *,
    clients: int = 3,
    seconds: float = 5.0,
    max_requests: int = 20_000,
    revisions: int = 3,
    k: int = 10,
    timeout: float = 30.0,
    key: str | None = None,
) -> LoadReport:
    """Search ``tasks`` from ``clients`` threads for ``seconds`` while ``card`` is PUT once
    and replaced ``revisions`` times with the write ``key`` (its source must be served or
    encoded already)."""
    host, port = local_address(base_url)
    targets = list(tasks)  # the clients also search the third task once it is served
    outcomes: list[_Outcome] = []
    puts: list[_Outcome] = []
    budget = itertools.count()  # shared by all clients: at most max_requests in all
    start = time.monotonic()
    deadline = start + seconds

    def client(first: int) -> None:
        connection = HTTPConnection(host, port, timeout=timeout)
        turn = first
        while time.monotonic() < deadline and next(budget) < max_requests:
            name = targets[turn % len(targets)]
            body = json.dumps({"query": queries[turn % len(queries)], "k": k})
            began = time.monotonic()
            status = _send(
                connection, "POST", f"/tasks/{quote(name)}/search", body, "application/json"
            )
            outcomes.append(_Outcome(began, time.monotonic(), status))
            turn += clients
        connection.close()

    def replacer() -> None:
        connection = HTTPConnection(host, port, timeout=timeout)
        for revision in range(revisions + 1):
            due = start + seconds * (0.2 + 0.6 * revision / max(revisions, 1))
            time.sleep(max(0.0, due - time.monotonic()))
            edited = card.model_copy(
                update={"description": f"{card.description} (revision {revision})"}
            )
            began = time.monotonic()
            status = _send(
                connection,
                "PUT",
                f"/tasks/{quote(card.name)}",
                edited.to_yaml(),
                "application/yaml",
                key,
            )
            puts.append(_Outcome(began, time.monotonic(), status))
            if status in (200, 201) and card.name not in targets:
                targets.append(card.name)
        connection.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    threads.append(threading.Thread(target=replacer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max([start + seconds, *(outcome.ended for outcome in outcomes)]) - start
    answered = [outcome for outcome in outcomes if outcome.status]
    latencies = np.array([o.ended - o.started for o in answered if o.status == 200]) * 1e3
    during = [
        outcome
        for outcome in outcomes
        if any(outcome.started < put.ended and outcome.ended > put.started for put in puts)
    ]
    return LoadReport(
        clients=clients,
        seconds=round(elapsed, 2),
        requests=len(answered),
        errors=sum(outcome.status != 200 for outcome in answered),
        dropped=len(outcomes) - len(answered),
        qps=round(len(answered) / elapsed, 1),
        p50_ms=round(float(np.percentile(latencies, 50)), 2) if latencies.size else 0.0,
        p99_ms=round(float(np.percentile(latencies, 99)), 2) if latencies.size else 0.0,
        puts=[put.status for put in puts],
        during_puts=len(during),
        failed_during_puts=sum(outcome.status != 200 for outcome in during),
    )
