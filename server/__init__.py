"""The campaign-analytics gRPC server: ingest pipeline, writer, metrics and services."""
