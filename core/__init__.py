"""What the export, runtime and benchmark stages share, below all three of them.

Layering (tests/test_layering.py enforces it):

    core      <- export, runtimes, bench     (core imports none of them)
    export    <- bench                        (export imports neither runtimes nor bench)
    runtimes  <- bench                        (runtimes import neither export nor bench)

Here live the contracts between the stages (the manifest an export writes and the artifact a runtime runs),
image data sets and their preprocessing, logits files and the metrics that compare them, atomic file I/O,
child processes, and the cache root. Nothing here imports paddle, onnxruntime, openvino or tensorrt.
"""
