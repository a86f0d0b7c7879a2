"""``groq-worker status`` with ``INBOUND=kafka``: the Kafka group's lag per partition.

Read with the worker's servers and security; a broker that cannot be reached, or a topic
that does not exist, is reported as the problem (and makes the command exit 1), never
raised.
"""

from __future__ import annotations

from faststream.kafka.security import parse_security
from rich.console import Console
from rich.table import Table

from app.adapters.kafka_lag import KafkaGroupLag, kafka_group_lag
from app.bootstrap.kafka import kafka_security
from app.settings import Settings

__all__ = ["collect_kafka_lag", "render_kafka_lag"]

# Bounds on asking a broker that does not answer (aiokafka waits far longer by default).
_TIMEOUT_MS = 10_000


async def collect_kafka_lag(settings: Settings) -> KafkaGroupLag:
    """The group's lag on ``KAFKA_TOPIC``, or the reason it could not be read."""
    topic, group = settings.kafka_topic, settings.insight_group
    try:
        return await kafka_group_lag(
            settings.kafka_servers,
            topic,
            group,
            request_timeout_ms=_TIMEOUT_MS,
            **parse_security(kafka_security(settings)),
        )
    except Exception as exc:  # no broker, refused credentials, a timeout
        problem = f"cannot read the group from {settings.kafka_bootstrap_servers}: "
        return KafkaGroupLag(topic, group, [], problem=problem + " ".join(str(exc).split()))


def render_kafka_lag(lag: KafkaGroupLag, console: Console) -> None:
    console.print(
        f"[bold]Kafka[/bold] topic {lag.topic}, group {lag.group} (INBOUND=kafka: "
        "partition order; EVENT_ORDER applies to the Redis inbound only)"
    )
    if lag.problem:
        console.print(f"[red]{lag.problem}[/red]")
        return
    table = Table("PARTITION", "COMMITTED", "END", "LAG")
    for part in lag.partitions:
        committed = "-" if part.committed is None else f"{part.committed:,}"
        table.add_row(str(part.partition), committed, f"{part.end:,}", f"{part.lag:,}")
    table.add_row("all", "", "", f"{lag.total:,}", style="bold")
    console.print(table)
