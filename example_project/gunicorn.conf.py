"""gunicorn's settings for the example served as a deployment is (`make serve`, docs/deployment.md).

Several worker processes, each serving one request at a time with its own persistent database
connection (DATABASE_CONN_MAX_AGE in the environment), all sharing PostgreSQL and Redis. Every
value can be overridden on gunicorn's command line or through GUNICORN_CMD_ARGS.
"""

from __future__ import annotations

import gc
import os
from typing import Any

bind = os.environ.get("BIND", "127.0.0.1:8000")
# A worker per core and one more is gunicorn's own advice for sync workers; each holds one
# database connection, so workers x machines must stay under PostgreSQL's max_connections.
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = "sync"
# A request that takes longer than this is killed with its worker: its transaction is rolled back.
timeout = 30
graceful_timeout = 10
# No access log by default: a request line can carry what a client should never have put in a URL.
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
# gunicorn's control socket is an administration interface this example does not use, at one
# path per user: several servers on one machine would take it from each other.
control_socket_disable = True

# Django is imported once, in the master, and the workers fork with it loaded. The cyclic garbage
# collector stays off while it loads (no holes in the pages the workers share), everything loaded
# is frozen into the permanent generation before each fork, and each worker collects again from
# its first request on. Its first requests still load for good (lazy imports, URL resolvers,
# templates, caches): after WARM_REQUESTS the worker freezes those too. A full (generation 2)
# collection then walks only what later requests left, not the hundred thousand objects loading
# left: a median pause of 4-6 ms instead of 80 (docs/deployment.md, `make bench-gc`).
preload_app = True
WARM_REQUESTS = 200
gc.disable()


def pre_fork(server: Any, worker: Any) -> None:
    gc.collect()  # the garbage loading left (some 1,700 objects) is not kept for good
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    worker.requests_served = 0
    gc.enable()


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    worker.requests_served = getattr(worker, "requests_served", 0) + 1
    if worker.requests_served == WARM_REQUESTS:
        # After the answer went out: one full collection here, then none of this again.
        gc.collect()
        gc.freeze()
