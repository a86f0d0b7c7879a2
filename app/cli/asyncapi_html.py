"""A self-contained HTML page of the AsyncAPI document: no script, no CDN, no network.

``render_html(document)`` takes the document as JSON (``app.cli.asyncapi.document()``) and
lays out what a gateway engineer needs: the server, each channel with its direction and
Redis binding, every payload field with its type, rules, description and examples, the full
examples (with the ``XADD`` command that writes an inbound one), and the shared types. It
renders whatever the document says; nothing here knows the worker's channels.
"""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Iterable
from typing import Any

from markdown_it import MarkdownIt

__all__ = ["render_html"]

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")

_METHODS = {
    "xreadgroup": "Redis STREAM, read with XREADGROUP",
    "xadd": "Redis STREAM, written with XADD",
    "lpush": "Redis LIST, written with LPUSH (newest first)",
    "rpush": "Redis LIST, written with RPUSH",
    "publish": "Redis Pub/Sub channel",
}
_DIRECTIONS = {
    "receive": ("in", "you write → the worker reads"),
    "send": ("out", "the worker writes → you read"),
}
_RULES = (
    ("pattern", "matches {}"),
    ("minLength", "at least {} chars"),
    ("maxLength", "at most {} chars"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("minimum", "≥ {}"),
    ("maximum", "≤ {}"),
)

_CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --soft: #f5f7fa;
        --in: #0b6b3a; --in-bg: #e3f4ea; --out: #1b4f9c; --out-bg: #e4ecfa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 30px; margin: 0 0 4px; }
h2 { font-size: 22px; margin: 48px 0 8px; padding-top: 16px; border-top: 2px solid var(--line); }
h2 code { font-size: 20px; background: none; padding: 0; }
h3 code { font-size: 16px; }
td > p:first-child { margin-top: 0; } td > p:last-child { margin-bottom: 0; }
h3 { font-size: 17px; margin: 28px 0 8px; }
h4 { font-size: 15px; margin: 20px 0 6px; }
a { color: var(--out); }
code, pre { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: var(--soft); padding: 1px 4px; border-radius: 4px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px;
      padding: 12px 14px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; }
th, td { border: 1px solid var(--line); padding: 6px 9px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.name { white-space: nowrap; font-weight: 600; }
.meta { color: var(--muted); margin: 0 0 20px; }
.muted { color: var(--muted); font-size: 13px; }
.badge { display: inline-block; font-size: 12px; font-weight: 700; padding: 2px 8px;
         border-radius: 10px; vertical-align: middle; margin-right: 6px; }
.badge.in { color: var(--in); background: var(--in-bg); }
.badge.out { color: var(--out); background: var(--out-bg); }
.req { color: #a3321c; font-weight: 600; }
.rules { display: block; color: var(--muted); font-size: 12.5px; margin-top: 3px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 8px 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; }
nav ul { padding-left: 20px; }
details summary { cursor: pointer; color: var(--muted); }
"""


def render_html(document: dict[str, Any], *, source: str | None = None) -> str:
    """The page for ``document``; ``source`` (its YAML) is appended for reference."""
    page = _Page(document)
    return page.render(source)


class _Page:
    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
        self.shown_types: list[str] = []

    # -- the page ------------------------------------------------------------------------

    def render(self, source: str | None) -> str:
        info = self.doc.get("info", {})
        title = _e(info.get("title", "AsyncAPI document"))
        operations = self.doc.get("operations", {})
        channels = [self._channel(name, op) for name, op in operations.items()]
        parts = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title} {_e(info.get('version', ''))}: AsyncAPI</title>",
            f"<style>{_CSS}</style></head><body><main>",
            f"<h1>{title}</h1>",
            f'<p class="meta">version {_e(info.get("version", "?"))} · AsyncAPI '
            f"{_e(self.doc.get('asyncapi', '?'))} · messages are "
            f"<code>{_e(self.doc.get('defaultContentType', '?'))}</code></p>",
            _md(info.get("description", "")),
            self._servers(),
            self._contents(operations),
            *channels,
            self._types(),
        ]
        if source is not None:
            parts.append(
                "<h2>The document</h2><details><summary>asyncapi.yaml, as generated</summary>"
                f"<pre><code>{_e(source)}</code></pre></details>"
            )
        parts.append(
            '<p class="muted">Rendered offline from the AsyncAPI document by '
            "<code>groq-worker asyncapi --html</code>.</p></main></body></html>\n"
        )
        return "\n".join(parts)

    def _servers(self) -> str:
        servers = self.doc.get("servers", {})
        if not servers:
            return ""
        rows = "".join(
            f"<tr><td class='name'>{_e(name)}</td>"
            f"<td><code>{_e(server.get('protocol', ''))}://{_e(server.get('host', ''))}"
            f"{_e(server.get('pathname', ''))}</code></td>"
            f"<td>{_md(server.get('description', ''))}</td></tr>"
            for name, server in servers.items()
        )
        return (
            "<h2>Servers</h2><table><tr><th>name</th><th>address in the document</th>"
            f"<th>description</th></tr>{rows}</table>"
        )

    def _contents(self, operations: dict[str, Any]) -> str:
        items = []
        for name, op in operations.items():
            channel = self._channel_of(op)
            css, label = _DIRECTIONS.get(op.get("action", ""), ("out", op.get("action", "")))
            payloads = ", ".join(self._payload_name(m) for m in self._messages_of(op))
            items.append(
                f'<li><a href="#{_anchor(name)}"><code>{_e(channel.get("address", name))}</code>'
                f'</a> <span class="badge {css}">{_e(label)}</span> {_e(payloads)}</li>'
            )
        return f"<nav><h2>Channels</h2><ul>{''.join(items)}</ul></nav>"

    # -- one channel -----------------------------------------------------------------------

    def _channel(self, name: str, op: dict[str, Any]) -> str:
        channel = self._channel_of(op)
        address = channel.get("address", name)
        action = op.get("action", "")
        css, label = _DIRECTIONS.get(action, ("out", action))
        binding = channel.get("bindings", {}).get("redis", {})
        facts = [("operation", f"<code>{_e(name)}</code> ({_e(action)} by the worker)")]
        method = binding.get("method")
        if method:
            facts.append(("Redis", _e(_METHODS.get(method, method))))
        if binding.get("groupName"):
            facts.append(("consumer group", f"<code>{_e(binding['groupName'])}</code>"))
        if binding.get("consumerName"):
            facts.append(("consumer", f"<code>{_e(binding['consumerName'])}</code>"))
        parts = [
            f'<h2 id="{_anchor(name)}"><span class="badge {css}">{_e(label)}</span>'
            f"<code>{_e(address)}</code></h2>",
            _facts(facts),
            _md(channel.get("description", "")),
        ]
        for message in self._messages_of(op):
            parts.append(self._message(message, address=address, inbound=action == "receive"))
        return "\n".join(parts)

    def _message(self, message: dict[str, Any], *, address: str, inbound: bool) -> str:
        payload = message.get("payload", {})
        name = self._payload_name(message)
        schema = self._resolve(payload)
        parts = [
            f"<h3>Message <code>{_e(name)}</code></h3>",
            f'<p class="muted">{_e(message.get("title", ""))}</p>',
            _md(schema.get("description", "")),
            self._fields(schema),
        ]
        for number, example in enumerate(schema.get("examples", []), 1):
            example = _in_schema_order(example, schema)
            note = _coverage(example, schema)
            parts.append(f"<h4>Example {number} <span class='muted'>({note})</span></h4>")
            parts.append(f"<pre><code>{_e(json.dumps(example, indent=2))}</code></pre>")
            if inbound:
                command = f"XADD {address} * payload {shlex.quote(json.dumps(example))}"
                parts.append(
                    '<p class="muted">written by a gateway with redis-cli:</p>'
                    f"<pre><code>{_e(command)}</code></pre>"
                )
        return "\n".join(parts)

    # -- schemas ---------------------------------------------------------------------------

    def _fields(self, schema: dict[str, Any]) -> str:
        properties: dict[str, Any] = schema.get("properties", {})
        if not properties:
            return ""
        required = set(schema.get("required", []))
        rows = []
        for field, spec in properties.items():
            examples = spec.get("examples", [])
            example_html = "<br>".join(f"<code>{_e(json.dumps(x))}</code>" for x in examples)
            mark = '<span class="req">required</span>' if field in required else "optional"
            rules = self._rules(spec)
            rows.append(
                f"<tr><td class='name'><code>{_e(field)}</code></td>"
                f"<td>{self._type(spec)}{rules}</td><td>{mark}</td>"
                f"<td>{_md(spec.get('description', ''))}</td><td>{example_html}</td></tr>"
            )
        extra = ""
        if schema.get("additionalProperties") is True:
            extra = '<p class="muted">Fields not listed here are allowed.</p>'
        return (
            "<table><tr><th>field</th><th>type and rules</th><th></th><th>description</th>"
            f"<th>examples</th></tr>{''.join(rows)}</table>{extra}"
        )

    def _type(self, spec: dict[str, Any]) -> str:
        if "$ref" in spec:
            name = spec["$ref"].rsplit("/", 1)[-1]
            target = self.schemas.get(name, {})
            if name not in self.shown_types:
                self.shown_types.append(name)
            link = f'<a href="#type-{_anchor(name)}">{_e(name)}</a>'
            if "enum" in target:
                values = " ".join(f"<code>{_e(str(v))}</code>" for v in target["enum"])
                return f"{link}: one of {values}"
            return link
        variants = spec.get("anyOf") or spec.get("oneOf")
        if variants:
            return " or ".join(self._type(v) + self._rules(v, inline=True) for v in variants)
        kind = spec.get("type", "any")
        if kind == "array":
            return f"array of {self._type(spec.get('items', {}))}"
        if kind == "object" and isinstance(spec.get("additionalProperties"), dict):
            return f"object of {self._type(spec['additionalProperties'])}"
        if "enum" in spec:
            return " ".join(f"<code>{_e(str(v))}</code>" for v in spec["enum"])
        fmt = f" ({_e(spec['format'])})" if "format" in spec else ""
        return f"{_e(str(kind))}{fmt}"

    def _rules(self, spec: dict[str, Any], *, inline: bool = False) -> str:
        rules = [text.format(_code(spec[key])) for key, text in _RULES if key in spec]
        if not rules:
            return ""
        if inline:
            return f" ({', '.join(rules)})"
        return f'<span class="rules">{"; ".join(rules)}</span>'

    def _types(self) -> str:
        sections = []
        seen: set[str] = set()
        while len(seen) < len(self.shown_types):  # a type's fields can show more types
            name = next(n for n in self.shown_types if n not in seen)
            seen.add(name)
            schema = self.schemas.get(name, {})
            body = [
                f'<h3 id="type-{_anchor(name)}"><code>{_e(name)}</code></h3>',
                _md(schema.get("description", "")),
            ]
            if "enum" in schema:
                values = " ".join(f"<code>{_e(str(v))}</code>" for v in schema["enum"])
                body.append(f"<p>{_e(schema.get('type', ''))}, one of {values}</p>")
            body.append(self._fields(schema))
            sections.append("\n".join(body))
        if not sections:
            return ""
        return "<h2>Types used above</h2>" + "\n".join(sections)

    # -- references ------------------------------------------------------------------------

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def _channel_of(self, op: dict[str, Any]) -> dict[str, Any]:
        return self._resolve(op.get("channel", {}))

    def _messages_of(self, op: dict[str, Any]) -> Iterable[dict[str, Any]]:
        return [self._resolve(message) for message in op.get("messages", [])]

    def _payload_name(self, message: dict[str, Any]) -> str:
        ref = message.get("payload", {}).get("$ref", "")
        return str(ref.rsplit("/", 1)[-1]) if ref else str(message.get("title", "payload"))


def _in_schema_order(example: Any, schema: dict[str, Any]) -> Any:
    """The example's fields in the schema's order (the document sorts them by name)."""
    if not isinstance(example, dict):
        return example
    order = list(schema.get("properties", {}))
    known = {key: example[key] for key in order if key in example}
    return known | {key: value for key, value in example.items() if key not in known}


def _coverage(example: Any, schema: dict[str, Any]) -> str:
    if not isinstance(example, dict):
        return "example"
    if set(schema.get("properties", {})) <= set(example):
        return "every field"
    if set(example) == set(schema.get("required", [])):
        return "required fields only"
    return "some optional fields left out"


def _md(text: str) -> str:
    return _MARKDOWN.render(text) if text else ""


def _e(text: object) -> str:
    return html.escape(str(text))


def _code(value: object) -> str:
    return f"<code>{_e(value)}</code>"


def _anchor(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def _facts(facts: list[tuple[str, str]]) -> str:
    rows = "".join(f"<dt>{_e(term)}</dt><dd>{value}</dd>" for term, value in facts)
    return f'<dl class="facts">{rows}</dl>'
