"""Runs under .venv-tritonclient (NVIDIA's stock client, no genserve installed): `python
tritonclient_driver.py PLAN.json`. Checks the server and model endpoints, then sends every
request of the plan at once (async_infer) and saves each requested output as <out>/<i>.<name>.npy.

PLAN: {"address": "127.0.0.1:port", "out": dir, "requests": [{"model", "inputs": {name: .npy},
"outputs": [name, ...]}]}. Prints one JSON line: the metadata it read and the errors it got.
"""

import json
import queue
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    out = Path(plan["out"])
    client = grpcclient.InferenceServerClient(url=plan["address"])
    models = sorted({r["model"] for r in plan["requests"]})
    report = {"live": client.is_server_live(), "ready": client.is_server_ready(),
              "server": client.get_server_metadata(as_json=True), "models": {}, "errors": []}
    for model in models:
        report["models"][model] = {"ready": client.is_model_ready(model),
                                   "metadata": client.get_model_metadata(model, as_json=True)}
    done: queue.Queue = queue.Queue()
    for i, request in enumerate(plan["requests"]):
        inputs = []
        for name, path in request["inputs"].items():
            array = np.load(path)
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(name) for name in request["outputs"]]
        client.async_infer(request["model"], inputs, lambda result, error, i=i: done.put((i, result, error)),
                           outputs=outputs, request_id=f"req-{i}", client_timeout=60)
    for _ in plan["requests"]:
        i, result, error = done.get(timeout=120)
        if error is not None:
            report["errors"].append([i, str(error)])
            continue
        assert result.get_response().id == f"req-{i}"
        for name in plan["requests"][i]["outputs"]:
            np.save(out / f"{i}.{name}.npy", result.as_numpy(name))
    client.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
