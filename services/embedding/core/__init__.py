"""EmbeddingService domain logic, free of protobuf: encoder, micro-batching, cache, users."""
