"""Thin FastStream subscribers and publishers."""
