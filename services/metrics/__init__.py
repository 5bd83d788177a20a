"""MetricsService: durable event store and per-arm statistics."""
