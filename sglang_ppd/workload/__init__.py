"""Workloads: real trace readers and synthetic multi-turn sessions, all producing :class:`TurnSpec`s."""
