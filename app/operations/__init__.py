"""What operators see of a worker: the HTTP port (/metrics, health), metrics, logs."""
