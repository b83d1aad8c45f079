"""Model builders for the tests, the benchmarks and the demo; not part of the compiler.

Each module builds quantized models in code, seeded, so the same arguments give the same model:
- onnx_qdq:   QDQ MLPs (the demo's jet tagger, random test models) and onnxruntime as their reference executor
- graphs:     random QDQ graphs with chains, fan-outs and residual joins
- onnx_tools: models as the tools users quantize with make them (onnxruntime-quantized, torch fake-quant)
- qonnx:      random QONNX MLPs and CNNs, their inputs, and the IR's integer semantics op by op (run_graph)
- brevitas:   a Brevitas MLP and a Brevitas CNN with a few seconds of training (synthetic data, 16x16 stripe
              images), random Brevitas MLPs and CNNs
- cnn:        QDQ CNNs built by hand (1-D and 2-D, pooling, residuals), random ones, and float PyTorch CNNs
              exported with torch.onnx and quantized with onnxruntime's quantize_static

Nothing is imported here: import the module you need (`from aieflow.examples.onnx_qdq import qdq_mlp`), so
torch, brevitas, qonnx and onnxruntime are imported only when a builder that needs them runs.
"""
