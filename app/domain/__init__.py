"""The domain: pure data and decisions. No faststream, redis, groq or structlog here."""
