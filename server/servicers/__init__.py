"""Thin servicers: protobuf <-> domain types, nothing else."""
