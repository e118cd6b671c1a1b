"""Files: the one safetensors reader and writer, run folders, checkpoints, series, importers."""
