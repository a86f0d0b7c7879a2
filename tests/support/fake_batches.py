"""Groq's Files and Batches endpoints for the loopback fake (``FakeGroq.batches``).

The real groq SDK uploads a JSONL file (``POST /openai/v1/files``, multipart, purpose
``batch``), creates a batch of it (``POST /openai/v1/batches``), follows it
(``GET /openai/v1/batches/{id}``, ``GET /openai/v1/batches``), cancels it
(``POST .../cancel``) and downloads its output and error files
(``GET /openai/v1/files/{id}/content``). Groq's file limits are enforced (50,000 lines,
100 MB; ``custom_id`` unique; every line a POST to ``/v1/chat/completions``): a file over
them is refused with a 400.

Behaviour is controlled (in process, or ``POST /_control/batches`` from another process):

* ``hold``: batches stay ``in_progress`` while it is true (a slow batch);
* ``fail_ids``: these ``custom_id``s are failed lines (in the error file, status 500);
* ``expire_next``: the next N batches to finish end ``expired``, answering only their
  first ``expire_answers`` lines (Groq returns what it finished before the window closed).

A batch that is neither held nor finished is finished when it is next retrieved; answers
are the fake's usual insight for the prompt (with prompt caching reported).
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.support.fake_groq import FakeGroq

__all__ = ["MAX_FILE_BYTES", "MAX_FILE_LINES", "FakeBatches"]

MAX_FILE_LINES = 50_000
MAX_FILE_BYTES = 100 * 1024 * 1024
_TERMINAL = {"completed", "failed", "expired", "cancelled"}


class FakeBatches:
    """The Files and Batches state of one ``FakeGroq``."""

    def __init__(self, groq: FakeGroq) -> None:
        self._groq = groq
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.hold = False
        self.fail_ids: set[str] = set()
        self.expire_next = 0
        self.expire_answers = 0
        self.uploads = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/v1/files", self._upload)
        app.router.add_get("/openai/v1/files/{file_id}/content", self._content)
        app.router.add_post("/openai/v1/batches", self._create)
        app.router.add_get("/openai/v1/batches", self._list)
        app.router.add_get("/openai/v1/batches/{batch_id}", self._retrieve)
        app.router.add_post("/openai/v1/batches/{batch_id}/cancel", self._cancel)
        app.router.add_post("/_control/batches", self._control)
        app.router.add_get("/_control/batches", self._state)

    def reset(self) -> None:
        self.__init__(self._groq)  # type: ignore[misc]

    def submitted_ids(self) -> list[str]:
        """Every ``custom_id`` of every batch created, in order (a request twice: twice)."""
        return [cid for batch in self.batches.values() for cid in batch["_custom_ids"]]

    # -- files ----------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self._groq.api_key}":
            return _error(401, "Invalid API Key", "invalid_api_key")
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not isinstance(upload, web.FileField):
            return _error(400, "purpose must be batch, with a file", "invalid_request")
        content = upload.file.read()
        problem = _check_input(content)
        if problem:
            return _error(400, problem, "invalid_batch_file")
        self.uploads += 1
        file_id = f"file_{len(self.files) + 1:04d}"
        self.files[file_id] = content
        return web.json_response(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": upload.filename,
                "purpose": "batch",
            }
        )

    async def _content(self, request: web.Request) -> web.Response:
        content = self.files.get(request.match_info["file_id"])
        if content is None:
            return _error(404, "no such file", "not_found")
        return web.Response(body=content, content_type="application/octet-stream")

    # -- batches --------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        input_id = body.get("input_file_id")
        if input_id not in self.files:
            return _error(400, "input_file_id does not exist", "invalid_request")
        if body.get("endpoint") != "/v1/chat/completions":
            return _error(400, "endpoint must be /v1/chat/completions", "invalid_request")
        if body.get("completion_window") not in {"24h", "48h", "72h", "7d"}:
            return _error(400, "completion_window must be 24h to 7d", "invalid_request")
        lines = [json.loads(line) for line in self.files[input_id].splitlines()]
        batch_id = f"batch_{len(self.batches) + 1:04d}"
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": input_id,
            "completion_window": body["completion_window"],
            "status": "validating",
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"completed": 0, "failed": 0, "total": len(lines)},
            "_lines": lines,
            "_custom_ids": [line["custom_id"] for line in lines],
        }
        self.batches[batch_id] = batch
        return web.json_response(_public(batch))

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch", "not_found")
        self._advance(batch)
        return web.json_response(_public(batch))

    async def _list(self, request: web.Request) -> web.Response:
        data = [_public(batch) for batch in reversed(self.batches.values())]
        return web.json_response({"object": "list", "data": data})

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch", "not_found")
        if batch["status"] not in _TERMINAL:
            batch["status"] = "cancelling"
        return web.json_response(_public(batch))

    def _advance(self, batch: dict[str, Any]) -> None:
        if batch["status"] in _TERMINAL:
            return
        if batch["status"] == "cancelling":
            batch["status"] = "cancelled"
            return
        if self.hold:
            batch["status"] = "in_progress"
            return
        lines = batch["_lines"]
        status = "completed"
        if self.expire_next > 0:
            self.expire_next -= 1
            status = "expired"
            lines = lines[: self.expire_answers]
        answered, failed = [], []
        for line in lines:
            custom_id = line["custom_id"]
            if custom_id in self.fail_ids:
                failed.append(_failed_line(custom_id))
            else:
                answered.append(self._answer(line))
        batch["status"] = status
        batch["request_counts"] = {
            "completed": len(answered),
            "failed": len(failed),
            "total": len(batch["_lines"]),
        }
        if answered:
            batch["output_file_id"] = self._store(answered)
        if failed:
            batch["error_file_id"] = self._store(failed)

    def _answer(self, line: dict[str, Any]) -> dict[str, Any]:
        from tests.support.fake_groq import _insight_for

        body = line["body"]
        messages = body.get("messages", [])
        content = json.dumps(_insight_for(messages))
        usage = (
            math.ceil(sum(len(str(m.get("content", ""))) for m in messages) / 4),
            math.ceil(len(content) / 4),
        )
        completion = self._groq.completion_body(body.get("model", ""), messages, content, usage)
        return {
            "id": f"batch_req_{line['custom_id']}",
            "custom_id": line["custom_id"],
            "response": {"status_code": 200, "request_id": "req_fake", "body": completion},
            "error": None,
        }

    def _store(self, lines: list[dict[str, Any]]) -> str:
        file_id = f"file_{len(self.files) + 1:04d}"
        self.files[file_id] = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return file_id

    # -- control ----------------------------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "hold" in body:
            self.hold = bool(body["hold"])
        if "fail_ids" in body:
            self.fail_ids = set(body["fail_ids"])
        if "expire_next" in body:
            self.expire_next = int(body["expire_next"])
            self.expire_answers = int(body.get("expire_answers", 0))
        return web.json_response({"ok": True})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "uploads": self.uploads,
                "batches": [_public(batch) for batch in self.batches.values()],
                "submitted_ids": self.submitted_ids(),
            }
        )


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in batch.items() if not key.startswith("_")}


def _failed_line(custom_id: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": 500,
            "request_id": "req_fake",
            "body": {"error": {"message": "scripted batch line failure", "type": "server_error"}},
        },
        "error": None,
    }


def _check_input(content: bytes) -> str | None:
    """Why Groq would refuse this batch input file, or None."""
    if len(content) > MAX_FILE_BYTES:
        return f"file is {len(content)} bytes; the limit is {MAX_FILE_BYTES}"
    lines = content.splitlines()
    if not lines:
        return "the file is empty"
    if len(lines) > MAX_FILE_LINES:
        return f"file has {len(lines)} lines; the limit is {MAX_FILE_LINES}"
    seen: set[str] = set()
    for number, raw in enumerate(lines, 1):
        try:
            line = json.loads(raw)
        except ValueError:
            return f"line {number} is not JSON"
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or custom_id in seen:
            return f"line {number}: custom_id missing or not unique"
        seen.add(custom_id)
        if line.get("method") != "POST" or line.get("url") != "/v1/chat/completions":
            return f"line {number}: must be a POST to /v1/chat/completions"
        if not isinstance(line.get("body"), dict) or "model" not in line["body"]:
            return f"line {number}: body with a model required"
    return None


def _error(status: int, message: str, code: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}},
        status=status,
    )
