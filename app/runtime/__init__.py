"""What the parts of one running worker process share, below the adapters.

The explicit metrics registry (``metrics``), structured logging (``logs``), the stop signal
and what the event path and the recovery loop tell each other (``state``, with
``wait_or_timeout``), and the start-up heap kept out of the collector's way (``heap``).
Every layer above may use them; they import nothing of the worker but the domain.
"""
