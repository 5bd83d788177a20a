"""ScoringService: catalogue, interactions, strategies, ranking and offline evaluation."""
