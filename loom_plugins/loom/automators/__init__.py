"""Automators run a service action on a node. ``shell`` is the first; more register by name."""
