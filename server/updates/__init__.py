"""Live updates: subscriptions, their coalescing queues, and the publisher
that turns commits (from any server process, via PostgreSQL NOTIFY) into
fresh metrics snapshots."""
