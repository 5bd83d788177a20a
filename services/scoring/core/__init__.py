"""ScoringService domain logic, free of protobuf: data, strategies, ranking, evaluation."""
