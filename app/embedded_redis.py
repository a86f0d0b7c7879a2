"""A Redis-compatible server inside this process, for ``groq-worker demo``: no install needed.

It is fakeredis's TCP server (``fakeredis.TcpFakeServer``, Lua with ``cjson`` through
``lupa``) on a free loopback port, serving in a background thread, with two fixes for
what the worker relies on (checked against fakeredis 2.40):

* **An error reply closed the connection.** The TCP server answers a command that fails
  (``NOSCRIPT`` on the first ``EVALSHA`` of a script, ``BUSYGROUP`` when FastStream
  creates a group that exists) and then drops the connection, so the client's *next*
  command on it fails with "Connection closed by server". Here an error is a reply like
  any other and the connection stays open, as with Redis.
* **Error replies with line breaks broke the protocol.** A Lua error's message carries its
  traceback on several lines; written as is, the client lost track of the replies. Redis
  writes them as spaces, and so does this server.
* **``XREADGROUP ... COUNT n BLOCK ms`` did not block.** With ``COUNT`` (FastStream always
  sends one) an empty read answered at once, so the subscriber would poll in a hot loop.
  Here an empty ``>`` read waits for an entry or the timeout, as with Redis.

Known differences that remain (none matters to the demo): no ``INFO``, no persistence, no
eviction or ``maxmemory``, replies of a few rarely used ``XINFO`` fields may differ. It is a
demo server: everything lives in memory and is gone when the process exits.
"""

from __future__ import annotations

import threading
from typing import Any

from fakeredis import TcpFakeServer
from fakeredis._clients._sync import FakeRedisConnection
from fakeredis._clients._tcp_server import TCPFakeRequestHandler
from fakeredis._socket import FakeSocket
from redis.exceptions import ResponseError

__all__ = ["EmbeddedRedis"]

LOOPBACK = "127.0.0.1"


class _BlockingReadSocket(FakeSocket):
    """fakeredis's command socket, whose empty ``XREADGROUP >`` keeps blocking."""

    def _xreadgroup(self, *args: Any, **kwargs: Any) -> Any:
        # fakeredis returns {} for "nothing new" when COUNT is given, and {} ends the wait;
        # None is what its blocking loop takes for "nothing yet, keep waiting".
        return super()._xreadgroup(*args, **kwargs) or None


class _Connection(FakeRedisConnection):
    """The server side of one TCP client: error replies are replies, not exceptions."""

    def _connect(self) -> FakeSocket:
        sock = super()._connect()
        sock.__class__ = _BlockingReadSocket  # the same socket, with the fixed XREADGROUP
        return sock

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except ResponseError as exc:
            # The TCP handler drops the connection on a raised error; returned, it is
            # written as an error reply and the connection goes on. Redis turns line
            # breaks into spaces (a Lua error's traceback has some): a reply is one line.
            message = str(exc)
            if "\r" in message or "\n" in message:
                return type(exc)(message.replace("\r", " ").replace("\n", " "))
            return exc


class _Handler(TCPFakeRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.current_client.__class__ = _Connection  # before it opens its socket


class EmbeddedRedis:
    """A Redis-compatible server on a free loopback port, served by a background thread.

    ``start()`` returns once it accepts connections; ``stop()`` closes it. Connections
    that are still open when it stops are served by daemon threads, which end with the
    process.
    """

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self._address = (host, port)
        self._server: TcpFakeServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the embedded Redis is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"redis://{self._address[0]}:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        server = TcpFakeServer(self._address)
        server.RequestHandlerClass = _Handler
        server.daemon_threads = True  # a client blocked in XREADGROUP never holds up exit
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="embedded-redis",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # stops accepting, and tells each connection's loop to end
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
