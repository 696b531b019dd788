"""The ingest path: validation, the batched writer and the pipeline joining them."""
