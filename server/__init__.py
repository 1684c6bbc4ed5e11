"""kgverify gRPC server: composition root, servicers, pipeline and backends."""

__version__ = "0.1.0"
