"""EmbeddingService: the BERT-family encoder shared by every strategy."""

import os

# PyTorch's CPU kernels run on GNU OpenMP, whose idle workers spin for 300,000 rounds
# (about a millisecond here) after each parallel region before they sleep. Between two
# forward passes that spinning holds the cores the gRPC threads need to answer and take
# requests: measured on 2 cores, the first request of the next batch arrived 4.3 ms after
# a forward pass with the default and 2.9 ms with 20,000, for the same forward time, and
# 8 single-text clients got 12% more throughput. libgomp reads the variable when torch
# loads it, so it is set here, before any module of this package imports torch; an
# operator's own value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "20000")
