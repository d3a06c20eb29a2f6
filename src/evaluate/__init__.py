"""The evaluate stages: the built-in tasks' data (``eval_data@<dataset>``) and lm-evaluation-harness
runs on the trained model (``evaluate``)."""
