"""The I/O: LLM providers and the Redis insight store."""
