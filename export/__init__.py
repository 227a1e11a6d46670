"""genserve.export: everything that needs torch, from digits to a published model version.

`data` loads MNIST offline, `models` holds one file per model family and the family registry,
`train` and `evaluate` fit and measure a model, `onnx_export` writes and checks the ONNX graphs,
and `pipeline` chains them into a new version in the model repository. Workers and the gateway
never import this package: they read the ONNX files and the manifest it writes.
"""
