"""PolicyService domain logic, free of protobuf: bandit algorithms, exposure caps, guardrails."""
