"""Live metrics over time windows, summed from per-second rollups."""
