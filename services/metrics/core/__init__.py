"""MetricsService domain logic, free of protobuf: events, storage, statistics."""
