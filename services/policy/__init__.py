"""PolicyService: the bandit over configuration arms that applications call."""
