"""The operations HTTP port: /metrics, /health/live and /health/ready, and the gauges it
samples from Redis. An entrypoint, like the handlers: it may use the adapters below it."""
