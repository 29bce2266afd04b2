"""What a served process sets up that an imported or embedded app must not: process-wide GC tuning.

`pgx-cds serve` runs uvicorn with `served_app` as its factory, so every worker process builds the app
(which loads the knowledge base) and then tunes its own collector. `create_app` alone (tests, the CLI's
`evaluate`, an application embedding the service) leaves the process's garbage collector as it was.
"""

from __future__ import annotations

import gc

from fastapi import FastAPI

#: young-generation threshold and the two older ones (see tune_gc)
GC_THRESHOLDS = (10_000, 20, 100)


def tune_gc() -> None:
    """The knowledge base is a large, long-lived object graph: move it out of the collector's way so full
    collections do not traverse it on every cycle (lower p99 under load). Each request allocates thousands
    of short-lived objects and the bounded memos hold many long-lived ones: collect the young generation
    less often and full collections rarely (measured: p99 with a new patient on every request
    191 ms -> 94 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def served_app() -> FastAPI:
    """The uvicorn factory of `pgx-cds serve`: the app, then the process's collector tuned for serving."""
    from service.main import create_app

    app = create_app()
    tune_gc()
    return app
