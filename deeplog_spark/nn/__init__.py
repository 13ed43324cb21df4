"""The torch side of deeplog-spark: models, the training loop, batch sources, batch scoring and the
Spark-free trainer. Nothing in this package imports pyspark (``tests/test_layout.py`` enforces it),
so it runs on a GPU machine that has only Python, torch, numpy and pyarrow."""
