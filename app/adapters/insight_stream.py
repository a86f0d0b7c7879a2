"""``acp:groq:insights:stream``: the InsightCreated entry, a plain ``XADD`` of its fields.

No FastStream framing (``__data__``): any Redis client reads the entry's fields
(``app/domain/insight_stream.py`` says which). Queued on the store's pipeline when there is
one, so the announcement is part of the insight's MULTI/EXEC; sent on its own otherwise
(a cluster has no transaction across slots).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.domain.keys import INSIGHT_STREAM_MAXLEN, Keys

__all__ = ["announce"]


async def announce(redis: Any, fields: Mapping[str, str], pipeline: Any) -> Any:
    """``XADD acp:groq:insights:stream MAXLEN ~ 10000 * <fields>`` on ``pipeline`` (queued,
    its reply comes with the transaction's) or, without one, on ``redis``."""
    if pipeline is not None:
        return pipeline.xadd(
            Keys.INSIGHTS_STREAM, dict(fields), maxlen=INSIGHT_STREAM_MAXLEN, approximate=True
        )
    return await redis.xadd(
        Keys.INSIGHTS_STREAM, dict(fields), maxlen=INSIGHT_STREAM_MAXLEN, approximate=True
    )
