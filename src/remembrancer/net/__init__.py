"""Outbound network helpers shared by the layers above the core (one bounded HTTP client)."""
