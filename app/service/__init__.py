"""The application layer: what the worker does with an event, between handlers and ports.

* ``insights.InsightService``: one entry in, exactly one outcome out (writes, dead letters,
  the canonical log line);
* ``model_calls.ModelCaller``: the model call of one event (breaker, retries, fallback);
* ``state.WorkerState``: the stop signal and failed entries the recovery loop shares.
"""
