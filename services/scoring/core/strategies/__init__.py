"""Recommendation strategies, each a protobuf-free class with a declared hyperparameter space,
found by name in the registry (services.scoring.core.strategies.registry)."""
