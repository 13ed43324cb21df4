"""deeplog-spark: DeepLog log anomaly detection on Spark and Delta Lake.

Stages: ingest (Loghub CSV -> Delta ``traces``), split (hash of BlockId), windows (sliding
windows -> Delta ``windows``), then training, detection and evaluation.
"""

__version__ = "0.1.0"
