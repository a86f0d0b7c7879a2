"""Groq's Batch API behind the ``BatchAPI`` port: ``client.files`` and ``client.batches``.

A batch is a JSONL file uploaded with ``purpose="batch"``, then ``batches.create`` with
``endpoint="/v1/chat/completions"`` and a completion window; the lane's own id goes in the
batch's ``metadata``, so a worker killed between creating the batch and recording its id
finds it again (``find``) instead of submitting the same requests twice. One attempt per
call (the SDK's retries off): the lane's loop retries on its next tick.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import groq
import httpx

from app.adapters.chat_completions import completion, error_fields, status_error
from app.adapters.groq_llm import chat_body, transport_error
from app.domain.batch import BATCH_ENDPOINT, COMPLETION_WINDOW, read_output
from app.domain.errors import LLMError, TransientLLMError
from app.domain.ports import BatchStatus, Completion, CompletionRequest

__all__ = ["LOCAL_ID_KEY", "GroqBatchAPI", "batch_results", "batch_status"]

LOCAL_ID_KEY = "acp_lane_batch"  # the metadata key that carries the lane's batch id


def batch_results(*files: bytes) -> dict[str, Completion | str]:
    """The answers of a batch's output and error files, by ``custom_id``: a completion, or
    why there is none (a failed line, or an answer with no content)."""
    found: dict[str, Completion | str] = {}
    for custom_id, line in read_output(*files).items():
        if line.body is None:
            found[custom_id] = line.error or "the batch line failed"
            continue
        try:
            found[custom_id] = completion(line.body, {}, model=str(line.body.get("model", "")))
        except LLMError as exc:
            found[custom_id] = str(exc)
    return found


def batch_status(batch: Any) -> BatchStatus:
    """The port's view of a batch object of the SDK (any of its response types)."""
    metadata = batch.metadata if isinstance(batch.metadata, dict) else {}
    counts = batch.request_counts
    return BatchStatus(
        batch_id=batch.id,
        status=str(batch.status),
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        local_id=metadata.get(LOCAL_ID_KEY),
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        total=counts.total if counts else 0,
    )


class GroqBatchAPI:
    """``BatchAPI`` on Groq, through the official SDK."""

    def __init__(
        self, *, api_key: str, base_url: str | None, timeout_seconds: float = 120.0
    ) -> None:
        self._api_key = api_key
        self._client = groq.AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
        )

    def line(self, custom_id: str, request: CompletionRequest) -> bytes:
        line = {
            "custom_id": custom_id,
            "method": "POST",
            "url": BATCH_ENDPOINT,
            "body": chat_body(request),
        }
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"

    async def submit(self, local_id: str, content: bytes) -> str:
        async with self._errors():
            uploaded = await self._client.files.create(
                file=(f"{local_id}.jsonl", content, "application/jsonl"), purpose="batch"
            )
            if not uploaded.id:
                raise TransientLLMError("bad_response", "the file upload returned no id")
            batch = await self._client.batches.create(
                input_file_id=uploaded.id,
                endpoint=BATCH_ENDPOINT,
                completion_window=COMPLETION_WINDOW,
                metadata={LOCAL_ID_KEY: local_id},
            )
        return str(batch.id)

    async def find(self, local_id: str) -> BatchStatus | None:
        async with self._errors():
            listed = await self._client.batches.list()
        for batch in listed.data or []:
            status = batch_status(batch)
            if status.local_id == local_id:
                return status
        return None

    async def retrieve(self, batch_id: str) -> BatchStatus:
        async with self._errors():
            return batch_status(await self._client.batches.retrieve(batch_id))

    async def results(self, status: BatchStatus) -> dict[str, Completion | str]:
        files = []
        for file_id in (status.output_file_id, status.error_file_id):
            if file_id:
                async with self._errors():
                    content = await self._client.files.content(file_id)
                    files.append(await content.read())
        return batch_results(*files)

    async def cancel(self, batch_id: str) -> BatchStatus:
        async with self._errors():
            return batch_status(await self._client.batches.cancel(batch_id))

    async def aclose(self) -> None:
        await self._client.close()

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """The SDK's exceptions as the domain's transient/permanent LLM errors."""
        try:
            yield
        except groq.APIConnectionError as exc:  # a timeout too (APITimeoutError)
            raise transport_error(exc, api_key=self._api_key, what="the Batch API") from None
        except groq.APIStatusError as exc:
            message, code, _ = error_fields(exc.body)
            raise status_error(
                exc.status_code,
                message,
                code,
                exc.response.headers,
                api_key=self._api_key,
                key_setting="GROQ_API_KEY",
            ) from None
