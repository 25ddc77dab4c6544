"""Graph optimisation passes run by the export after constant folding (numpy + onnx; see driver.py)."""
