"""What the service tells about itself: Prometheus metrics, logs with request
ids, and the pipeline's condition (healthy, degraded or stopping, and why)."""
