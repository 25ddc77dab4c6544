"""Paddle -> ONNX export stage. Importing this package does not import paddle."""
