"""Training: the job description and run bookkeeping shared with the Spark-free trainer, the Spark
runner (Petastorm + TorchDistributor) and online fine-tuning."""
