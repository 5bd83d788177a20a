"""EmbeddingService: the BERT-family encoder shared by every strategy."""
