"""No setting of the shell reaches a test: not its ``Settings``, not the processes it starts.

pydantic-settings reads every setting from the process environment, whatever else it is
given (``Settings(_env_file=None)`` only turns off the env file). A ``GROQ_RPM_LIMIT`` or a
``REDIS_URL`` exported in the shell that runs ``make test`` would otherwise change what the
tests build, and a worker process a test starts would inherit it.

* ``settings_from(**values)``: a ``Settings`` from these values and the defaults only;
* ``without_settings(environ)``: an environment for a child process, settings removed;
* ``setting_names_in(environ)``: the names to remove (the session fixture in
  ``tests/conftest.py`` removes them from the test process itself).

A name is a setting when it is a field of ``Settings`` or starts like one of the families
below: generous on purpose, so that a setting added later (``OTEL_*``, ``KAFKA_*``, ``DLQ_*``)
is covered before anyone remembers to list it. Names are compared upper-cased, as
pydantic-settings matches them case-insensitively.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from app.settings import Settings

__all__ = [
    "SETTING_NAMES",
    "SETTING_PREFIXES",
    "is_setting_name",
    "setting_names_in",
    "settings_from",
    "without_settings",
]

SETTING_NAMES: frozenset[str] = frozenset(name.upper() for name in Settings.model_fields)
SETTING_PREFIXES: tuple[str, ...] = (
    "GROQ_",
    "LLM_",
    "INSIGHT_",
    "REDIS_",
    "WORKER_",
    "READ_",
    "MAX_",
    "STREAM_",
    "CLAIM_",
    "CONSUMER_",
    "SHUTDOWN_",
    "BREAKER_",
    "METRICS_",
    "LOG_",
    "PROMPT_",
    "ALLOWED_",
    "DEEP_",
    "OTEL_",
    "KAFKA_",
    "DLQ_",
    "INBOUND",
    "EVENT_ORDER",
    "TENANT_WEIGHTS",
)


def is_setting_name(name: str) -> bool:
    """Whether an environment variable of this name is (or may be) a worker setting."""
    upper = name.upper()
    return upper in SETTING_NAMES or upper.startswith(SETTING_PREFIXES)


def setting_names_in(environ: Mapping[str, str] | None = None) -> list[str]:
    """The names in ``environ`` (default: this process's) that are settings."""
    source = os.environ if environ is None else environ
    return sorted(name for name in source if is_setting_name(name))


def without_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) without any setting, for a child process."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if not is_setting_name(name)}


class _GivenSettings(Settings):
    """``Settings`` whose only source is the values given: no environment, no env file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from(**values: Any) -> Settings:
    """The settings these values and the defaults make, whatever the environment holds."""
    return _GivenSettings(**values)
