"""The composition root: what the worker is made of, built once, in two steps.

* ``worker.py``: what the app is at import (``faststream run app:app``, ``faststream docs
  gen``): ``build_worker`` builds the settings, logs, metrics, the Redis client, the
  broker with its declared handlers, the app and its AsyncAPI document. Nothing connects,
  and nothing needs the model.
* ``running.py``: what runs, built on the running loop when the app starts (FastStream's
  lifespan): the event path, the operations port, the recovery loop and the other
  background tasks; taken down, in reverse, when it stops.
* ``event_path.py``: the units one event goes through, wired to this worker's store.
* ``providers.py``: the model provider (behind the shared rate limiter) and the Batch API.

Tests call ``build_worker`` (or ``create_app``) with fakes (``llm``, ``store``, ...), and
``Worker.running()`` to run it in their own loop as ``faststream run`` would.
"""

from app.bootstrap.event_path import EventPath
from app.bootstrap.providers import build_batch_api, build_llm
from app.bootstrap.running import Running
from app.bootstrap.worker import Fakes, Worker, build_worker, create_app, package_version

__all__ = [
    "EventPath",
    "Fakes",
    "Running",
    "Worker",
    "build_batch_api",
    "build_llm",
    "build_worker",
    "create_app",
    "package_version",
]
