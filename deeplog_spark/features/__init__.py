"""Features: the sliding-window export (Spark SQL) and the training rows of both LSTMs."""
