"""A loopback OTLP/HTTP endpoint that accepts every export and keeps nothing.

The benchmark's ``--otel`` variant points the worker at it, so the worker pays the whole
cost of tracing (spans recorded, batched, encoded, posted over HTTP) while the harness pays
next to nothing: the body is read and dropped, no protobuf is decoded (the test receiver,
``tests/support/otlp_receiver.py``, decodes; this one only counts). An empty 200 is a
successful export for the OTLP/HTTP exporter.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["OtlpSink"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.server.lock:
            self.server.requests += 1
            self.server.bytes += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0


class OtlpSink:
    """``with OtlpSink() as sink``: ``sink.endpoint`` for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-sink", daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def received(self) -> tuple[int, int]:
        """Export requests and body bytes received so far."""
        with self._server.lock:
            return self._server.requests, self._server.bytes

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
