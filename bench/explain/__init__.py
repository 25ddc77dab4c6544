"""Where drift comes from: compare a candidate with the fp32 reference layer by layer and name the layer
where the error starts (``python -m bench explain``, and a cell's ``explain`` section when its drift gates fail).

The reference is ONNX Runtime on CPU in fp32, graph optimisations off, on the fp32 export, with every
intermediate float tensor made a graph output. A candidate is the model the cell runs (ORT on an fp32, fp16 or
int8 QDQ ONNX; OpenVINO on the ONNX or an IR, NNCF-quantised included, with its precision hint), also with its
intermediate tensors exposed. Tensors are matched *by name* (both ORT's quantiser and OpenVINO's ONNX frontend
keep the ONNX tensor names of what they do not remove) and compared in the reference's topological order on a
few real images: cosine, relative L2 error, max abs diff, and the error growth (a tensor's error over the
largest error of what its node reads). The first divergence is the first tensor whose error crosses the
threshold while its inputs are below it.

Exposing a tensor can stop a runtime from fusing around it, which changes numerics (OpenVINO int8: a wrong
fusion of ReduceMean and BatchNorm disappears). So every explain also runs the candidate as deployed and, when
its final logits differ from the instrumented run's, finds the first divergence of the deployed run with
models cut at the measured tensors (``search``).

Modules: ``graph`` (the reference graph: tensors, order, blocks), ``capture`` (the protocol every runtime
implements), ``ort`` and ``ov`` (captures and name matching), ``compare`` (per-layer figures, first
divergence, growth), ``search`` (the deployed run), ``fixes`` (int8: re-quantise with layers kept in float),
``known`` (runtime bugs recognised by their pattern), ``report`` (CSV, plot, text, the record section),
``run`` (a target -> its explanation) and ``cli``.
"""
