"""KServe's own ModelServer serving a genserve ONNX graph: the peer of `make bench-peers`.

Runs in KServe's virtualenv (.venv-kserve, `kserve==0.21.0` and the same onnxruntime as
genserve), never in genserve's: it imports nothing from genserve. A small `kserve.Model`
whose `predict` runs one ONNX Runtime session with the settings a genserve worker uses for
`--threads 1`: one intra-op and one inter-op thread, spinning off, sequential execution, all
graph optimizations, CPU provider. Inputs arrive as v2 tensors (raw or typed), outputs go
back raw, as genserve's ModelInfer answers raw requests.

    .venv-kserve/bin/python bench/kserve_onnx.py --model_name vae --onnx /path/model.onnx --grpc_port 8081
"""

from __future__ import annotations

import argparse

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


def session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        self.path = path
        self.threads = threads
        self.session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        self.session = session(self.path, self.threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        outputs = self.session.run(self.output_names, feeds)
        infer_outputs = []
        for name, array in zip(self.output_names, outputs):
            out = InferOutput(name=name, shape=list(array.shape), datatype="FP32")
            out.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.float32), binary_data=True)
            infer_outputs.append(out)
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=infer_outputs,
                             use_binary_outputs=True)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=__doc__)
    parser.add_argument("--onnx", required=True, help="the ONNX graph to serve")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args, _ = parser.parse_known_args()
    model = OnnxModel(args.model_name, args.onnx, args.threads)
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
