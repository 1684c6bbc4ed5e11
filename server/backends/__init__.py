"""Backends behind typing.Protocol ports, selected by name in the registry."""
