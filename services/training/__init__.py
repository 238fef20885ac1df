"""Labels, training runs (dataset, heads, fine-tuning), the model registry and re-index jobs."""
