"""A loopback OTLP/HTTP trace receiver: what a process exports, decoded for a test to read.

The real OpenTelemetry exporter talks to it over a socket, as it would to a collector:
point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``receiver.endpoint`` (the exporter appends
``/v1/traces``), or give ``OTLPSpanExporter(endpoint=receiver.traces_url)``. It answers as
the OTLP specification says (opentelemetry-proto ``docs/specification.md``, "OTLP/HTTP"):

* ``POST /v1/traces`` with an ``ExportTraceServiceRequest``, binary protobuf
  (``application/x-protobuf``) or OTLP's JSON encoding (``application/json``: hex trace and
  span ids, integer enums), plain or ``Content-Encoding: gzip`` (or ``deflate``): **200**
  with an ``ExportTraceServiceResponse`` in the request's encoding, ``partial_success``
  unset. Every span is decoded into a ``ReceivedSpan``.
* Not decodable: **400**; another content type: **415**; a body over ``max_body_bytes``
  (20 MiB, the specification's recommended limit), before or after decompression: **413**;
  another path (``/v1/metrics``, ``/v1/logs``): **404**. Failures carry a
  ``google.rpc.Status`` body, as the specification requires. Every request is recorded
  (``requests()``), refused or not, so a test can tell that nothing else was posted.
* ``fail_next(count, status, retry_after)``: the next requests are answered with that
  status, a collector that is down or throttles (429, 502, 503, 504 are the retryable
  ones; the exporter honours ``Retry-After``).

A ``ThreadingHTTPServer`` in a thread of its own, not an aiohttp app on the test's loop:
the exporter is synchronous (``requests``), ``SimpleSpanProcessor`` exports inside
``span.end()`` and ``TracerProvider.force_flush()`` blocks its caller until the export is
answered, so a receiver on the same event loop would deadlock the test that waits on it.
The same receiver serves a worker started as a subprocess: ``environment()`` gives the
variables to start it with. ``wait_for`` blocks (threads, subprocesses);
``await wait_for_async`` polls without blocking the loop (a worker in the test process).

Run it on its own: ``python -m tests.support.otlp_receiver [--port N]`` prints one JSON
line per span received; ``GET /_control/spans`` returns them all as JSON,
``POST /_control/reset`` forgets them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.redis_server import free_port

__all__ = [
    "ExportRequest",
    "OtlpReceiver",
    "ReceivedSpan",
    "SpanEvent",
    "SpanLink",
]

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_BODY_BYTES = 20 * 1024 * 1024  # the specification's recommended limit
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    attributes: dict[str, Any]
    time_unix_nano: int


@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    trace_state: str


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One exported span: ids as lowercase hex, attribute values as Python values.

    Attribute values are what the SDK holds: ``str``, ``bool``, ``int``, ``float``,
    ``bytes``, a ``tuple`` for an array (the SDK stores a list attribute as a tuple), a
    ``dict`` for a key-value list. ``parent_span_id`` is None for a root span (also a
    span whose remote parent was dropped); ``kind`` and ``status_code`` are the API's
    enums (``SPAN_KIND_UNSPECIFIED`` reads as ``INTERNAL``, as the specification allows).
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: SpanKind
    attributes: dict[str, Any]
    events: tuple[SpanEvent, ...]
    links: tuple[SpanLink, ...]
    status_code: StatusCode
    status_message: str
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    trace_state: str = ""
    flags: int = 0

    @property
    def duration_seconds(self) -> float:
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e9

    def event(self, name: str) -> SpanEvent | None:
        """The first event of this name, or None."""
        return next((event for event in self.events if event.name == name), None)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (enums by name, bytes as hex, tuples as lists)."""
        record = asdict(self)
        record["kind"] = self.kind.name
        record["status_code"] = self.status_code.name
        return _jsonable(record)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """One request the receiver answered, whatever it answered."""

    method: str
    path: str
    content_type: str
    content_encoding: str
    headers: dict[str, str]  # names lowercased
    status: int
    span_count: int
    error: str = ""


@dataclass(slots=True)
class _Scripted:
    status: int
    retry_after: int | None


@dataclass(slots=True)
class _Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""  # why it was refused, for the record


class OtlpReceiver:
    """``with OtlpReceiver() as receiver:`` a started receiver on a free loopback port."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        max_body_bytes: int = MAX_BODY_BYTES,
        on_span: Callable[[ReceivedSpan], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.max_body_bytes = max_body_bytes
        self._on_span = on_span
        self._changed = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[ExportRequest] = []
        self._scripted: list[_Scripted] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        server = _Server((self.host, self.port), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-receiver:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where to export -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter adds the path)."""
        return f"http://{self.host}:{self.port}"

    @property
    def traces_url(self) -> str:
        """The full URL for ``OTLPSpanExporter(endpoint=...)`` or ``..._TRACES_ENDPOINT``."""
        return self.endpoint + TRACES_PATH

    def environment(self, *, schedule_delay_ms: int = 50, **extra: str) -> dict[str, str]:
        """Variables that make a process export its spans here, promptly.

        ``OTEL_BSP_SCHEDULE_DELAY`` shortens the batch processor's wait (5 s by default);
        ``extra`` adds or overrides variables (``OTEL_SERVICE_NAME="..."``).
        """
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": str(schedule_delay_ms),
            **extra,
        }

    # -- what arrived ----------------------------------------------------------------

    def spans(self, name: str | None = None) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order (only those named ``name``)."""
        with self._changed:
            return [span for span in self._spans if name is None or span.name == name]

    def by_trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of one trace (hex id, any case), in arrival order."""
        wanted = trace_id.lower()
        with self._changed:
            return [span for span in self._spans if span.trace_id == wanted]

    def requests(self) -> list[ExportRequest]:
        """Every request answered so far, in order."""
        with self._changed:
            return list(self._requests)

    def clear(self) -> None:
        """Forget the spans and requests received so far (and any scripted failure)."""
        with self._changed:
            self._spans.clear()
            self._requests.clear()
            self._scripted.clear()

    def fail_next(
        self, count: int = 1, *, status: int = 503, retry_after: int | None = None
    ) -> None:
        """Answer the next ``count`` export requests with ``status`` (spans not kept)."""
        with self._changed:
            self._scripted.extend(_Scripted(status, retry_after) for _ in range(count))

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], object], within: float = 10.0
    ) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` is true; the spans then. AssertionError if not."""
        deadline = time.monotonic() + within
        with self._changed:
            while not predicate(list(self._spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(self._timeout_message(within))
                self._changed.wait(remaining)
            return list(self._spans)

    async def wait_for_async(
        self,
        predicate: Callable[[list[ReceivedSpan]], object],
        within: float = 10.0,
        *,
        poll: float = 0.02,
    ) -> list[ReceivedSpan]:
        """``wait_for`` that lets the event loop run (a worker in the test's process)."""
        deadline = time.monotonic() + within
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() >= deadline:
                raise AssertionError(self._timeout_message(within))
            await asyncio.sleep(poll)

    def _timeout_message(self, within: float) -> str:
        names = [span.name for span in self._spans]
        statuses = [request.status for request in self._requests]
        return (
            f"no match within {within} s: {len(names)} span(s) received {names}, "
            f"request statuses {statuses}"
        )

    # -- the protocol ----------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> _Answer:
        """Answer one request (the HTTP handler's work, callable without a socket)."""
        lowered = {name.lower(): value for name, value in headers.items()}
        content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
        encoding = lowered.get("content-encoding", "").strip().lower()
        spans: list[ReceivedSpan] = []
        answer = self._answer(method, path, content_type, encoding, body, spans)
        record = ExportRequest(
            method=method,
            path=path,
            content_type=content_type,
            content_encoding=encoding,
            headers=lowered,
            status=answer.status,
            span_count=len(spans),
            error=answer.error,
        )
        with self._changed:
            self._requests.append(record)
            self._spans.extend(spans)
            self._changed.notify_all()
        if self._on_span is not None:
            for span in spans:
                self._on_span(span)
        return answer

    def _answer(
        self,
        method: str,
        path: str,
        content_type: str,
        encoding: str,
        body: bytes,
        spans: list[ReceivedSpan],
    ) -> _Answer:
        if method != "POST" or path.split("?")[0] != TRACES_PATH:
            return _failure(404, f"no OTLP traces endpoint at {method} {path}", content_type)
        if content_type not in (PROTOBUF, JSON):
            return _failure(415, f"unsupported content type {content_type!r}", PROTOBUF)
        with self._changed:
            scripted = self._scripted.pop(0) if self._scripted else None
        if scripted is not None:
            answer = _failure(scripted.status, "scripted failure", content_type)
            if scripted.retry_after is not None:
                answer.headers["Retry-After"] = str(scripted.retry_after)
            return answer
        if len(body) > self.max_body_bytes:
            return _failure(413, "request body too large", content_type)
        try:
            payload = _decompress(body, encoding, self.max_body_bytes)
        except _TooLarge:
            return _failure(413, "request body too large once decompressed", content_type)
        except (ValueError, zlib.error) as exc:
            return _failure(400, f"cannot decompress the body: {exc}", content_type)
        try:
            request = _parse(payload, content_type)
        except (DecodeError, ValueError, json_format.ParseError) as exc:
            return _failure(400, f"not an ExportTraceServiceRequest: {exc}", content_type)
        spans.extend(decode_spans(request))
        response = ExportTraceServiceResponse()  # partial_success unset: all accepted
        if content_type == JSON:
            return _Answer(200, JSON, json_format.MessageToJson(response).encode())
        return _Answer(200, PROTOBUF, response.SerializeToString())


# -- decoding ------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ValueError(f"unsupported content encoding {encoding!r}")
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or a zlib header
    data = inflater.decompress(body, limit + 1)
    if len(data) > limit or inflater.unconsumed_tail:
        raise _TooLarge
    if not inflater.eof:
        raise ValueError("the compressed body is cut short")
    return data


def _parse(payload: bytes, content_type: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        request.ParseFromString(payload)
        return request
    document = json.loads(payload)
    json_format.ParseDict(_hex_ids_to_base64(document), request, ignore_unknown_fields=True)
    return request


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key in _HEX_ID_KEYS and isinstance(value, str):
            converted[key] = base64.b64encode(bytes.fromhex(value)).decode()
        else:
            converted[key] = _hex_ids_to_base64(value)
    return converted


def decode_spans(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Every span of an export request as a ``ReceivedSpan``."""
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=SpanKind(max(int(span.kind) - 1, 0)),
                        attributes=_attributes(span.attributes),
                        events=tuple(
                            SpanEvent(e.name, _attributes(e.attributes), e.time_unix_nano)
                            for e in span.events
                        ),
                        links=tuple(
                            SpanLink(
                                link.trace_id.hex(),
                                link.span_id.hex(),
                                _attributes(link.attributes),
                                link.trace_state,
                            )
                            for link in span.links
                        ),
                        status_code=StatusCode(int(span.status.code)),
                        status_message=span.status.message,
                        resource=resource,
                        scope_name=scope.name,
                        scope_version=scope.version,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        trace_state=span.trace_state,
                        flags=span.flags,
                    )
                )
    return spans


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _failure(status: int, message: str, content_type: str) -> _Answer:
    problem = status_pb2.Status(message=message)
    if content_type == JSON:
        body = json_format.MessageToJson(problem).encode()
    else:
        body, content_type = problem.SerializeToString(), PROTOBUF
    return _Answer(status, content_type, body, error=message)


# -- HTTP ----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a keep-alive connection never holds up stop()
    receiver: OtlpReceiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the exporter keeps its connection alive
    timeout = 5  # an idle kept-alive connection is closed after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the requests are recorded instead

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():  # chunked or missing: the body cannot be told from the next
            self.close_connection = True
            self._send(_Answer(411, "text/plain", b"Content-Length required"))
            return
        body = self.rfile.read(int(length))
        receiver = self.server.receiver
        if self.path == "/_control/reset":
            receiver.clear()
            self._send(_Answer(200, JSON, b"{}"))
            return
        self._send(receiver.handle("POST", self.path, dict(self.headers.items()), body))

    def do_GET(self) -> None:
        receiver = self.server.receiver
        if self.path == "/_control/spans":
            body = json.dumps([span.as_json() for span in receiver.spans()]).encode()
            self._send(_Answer(200, JSON, body))
            return
        self._send(receiver.handle("GET", self.path, dict(self.headers.items()), b""))

    def _send(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)

    def show(span: ReceivedSpan) -> None:
        print(json.dumps(span.as_json()), flush=True)

    receiver = OtlpReceiver(args.port, host=args.host, on_span=show)
    with receiver:
        print(f"OTEL_EXPORTER_OTLP_ENDPOINT={receiver.endpoint}", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
