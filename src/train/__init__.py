"""Training: the fit function, its checkpoints, MLflow tracking and reports."""
