"""One thin entry per DVC stage (``python -m stages.<name>``): read params, call one library function."""
