"""Integrations with the tools around the product: MLflow tracking, the pyfunc model and the registry."""
