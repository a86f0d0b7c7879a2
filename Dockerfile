# acp-groq-worker: `docker build -t acp-groq-worker .`
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv

# Dependencies in their own layer: it changes only when pyproject.toml does.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
    && pip install . \
    && pip uninstall -y acp-groq-worker \
    && rm -rf app

# The application itself.
COPY app ./app
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /srv --shell /usr/sbin/nologin worker

USER 10001
EXPOSE 9102

# /health/live answers while the event loop runs (see docs/operations.md).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('METRICS_PORT', '9102'), timeout=2)"]

# SIGTERM stops reading, finishes in-flight events (SHUTDOWN_TIMEOUT_SECONDS) and exits 0.
STOPSIGNAL SIGTERM
CMD ["faststream", "run", "app:app"]
