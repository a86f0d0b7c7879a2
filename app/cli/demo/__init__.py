"""``groq-worker demo``: the worker end to end in one command, with nothing else installed.

1. Redis: the one at ``REDIS_URL`` if it answers, otherwise a private ``redis-server`` (or
   the ``valkey-server`` of the ``demo`` extra) started for the run on a free loopback port
   and stopped at its end (``app.cli.demo.server``).
2. The real worker app (``build_worker``), started in this process as consumer ``demo``,
   with the offline model unless ``GROQ_API_KEY`` is set, its logs at WARNING so that the
   terminal shows the demo's own output.
3. A realistic sample of gateway events (``app.cli.demo.events``), written the way a gateway
   writes them: ``XADD <INSIGHT_STREAM> * payload '<json>'``.
4. Progress until the group has acknowledged every entry, then the insights as a table,
   the outcome counts of the worker's metric and where each key lives.

``--publish-only`` does steps 3 and 4 against a worker that runs elsewhere (the producer of
``deploy/docker-compose.yml``). Exits 0 once every entry reached an outcome, 1 if they did
not within ``--timeout``, Redis failed or no server could be started, 2 for a bad setting,
130 on Ctrl-C, 143 on SIGTERM and 129 on SIGHUP before the end. ``--keep-running`` leaves
the worker and the Redis up for ``groq-worker status`` until Ctrl-C or SIGTERM (then 0).

The modules, one job each, in the order a run uses them:

* ``command``: the options, their checks, and the exit code of a run;
* ``session``: one run from start to end, and the signals that end it early;
* ``redis_choice``: which Redis the run uses: a cluster, ``REDIS_URL``, or a server;
* ``server``: the server the demo starts when it has no Redis to use;
* ``cluster``: the Redis Cluster it starts for ``--cluster``;
* ``worker``: the settings of the demo's worker, and what its metrics counted;
* ``events``: the sample traffic;
* ``follow``: publishing the sample and following it to its outcomes;
* ``model``: the data of a run;
* ``readback``: what the run left in Redis, read back;
* ``render``: what the terminal shows.
"""

from __future__ import annotations

from app.cli.demo.command import register

__all__ = ["register"]
