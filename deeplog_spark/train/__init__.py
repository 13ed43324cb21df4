"""Training: the job description and run bookkeeping shared with the Spark-free trainer, the Spark
runner (a Parquet or Petastorm feed + TorchDistributor) and online fine-tuning."""
