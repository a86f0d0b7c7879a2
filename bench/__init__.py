"""The benchmark of the worker against two baselines (``python -m bench``; see ``run.py``)."""
