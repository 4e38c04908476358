"""FastAPI dependencies shared by the routers: settings, a Redis client, Records, an enqueue function.

Each is a plain function so tests (and other apps) replace it with
`app.dependency_overrides[get_x] = ...`. Clients are cached per process and per URL.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any

import redis
from fastapi import Depends

from meshgen.records import JobRecord, Records
from meshgen.settings import Settings

#: Queue a sync for a trigger; returns the queued JobRecord.
Enqueue = Callable[[Any], JobRecord]  # Any = meshgen.gitops.jobs.SyncRequest (imported lazily)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


@lru_cache(maxsize=8)
def _redis_for(url: str) -> redis.Redis:
    from meshgen.gitops.jobs import redis_client

    return redis_client(Settings(redis_url=url))


def get_redis(settings: Annotated[Settings, Depends(get_settings)]) -> redis.Redis:
    return _redis_for(settings.redis_url)


def get_records(settings: Annotated[Settings, Depends(get_settings)],
                client: Annotated[redis.Redis, Depends(get_redis)]) -> Records:
    return Records(client, settings.redis_prefix)


@lru_cache(maxsize=8)
def _celery_for(settings: Settings) -> Any:
    from meshgen.gitops.jobs import make_celery

    return make_celery(settings)  # a producer only: tasks are sent by name, the worker runs them


def get_enqueue(settings: Annotated[Settings, Depends(get_settings)],
                records: Annotated[Records, Depends(get_records)]) -> Enqueue:
    from meshgen.gitops.jobs import enqueue_sync

    app = _celery_for(settings)
    return lambda request: enqueue_sync(app, settings, records, request)


#: The typed forms endpoints declare (`records: RecordsDep`).
RecordsDep = Annotated[Records, Depends(get_records)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]
