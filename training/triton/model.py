"""Triton python-backend model: runs the member's model.onnx with onnxruntime on CPU.

Copied into <repository>/<member>/1/model.py by the training package. It runs inside Triton's
python backend stub, whose environment has only numpy (< 2), onnxruntime and
triton_python_backend_utils: import nothing else. Input/output names and shapes come from the
model's config.pbtxt, which the training package generates from pcam_core.contract.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """All requests of one execute() call go through one onnxruntime run (Triton batched them)."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.patch_shape = tuple(int(d) for d in config["input"][0]["dims"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_thread_count", "0") or 0)
        options.inter_op_num_threads = int(params.get("inter_op_thread_count", "1") or 1)
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def _image(self, request):
        """The request's uint8 (n, H, W, 3) batch, or an error message."""
        tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
        if tensor is None:
            return None, f"missing input {self.input_name!r}"
        image = tensor.as_numpy()
        if image.dtype != np.uint8:
            return None, f"input {self.input_name!r} must be uint8, got {image.dtype}"
        if image.ndim != 1 + len(self.patch_shape) or tuple(image.shape[1:]) != self.patch_shape:
            return None, f"input {self.input_name!r} must be (n, {self.patch_shape}), got {image.shape}"
        if image.shape[0] == 0:
            return None, f"input {self.input_name!r} holds no patches"
        return image, None

    def _error(self, message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def execute(self, requests):
        responses = [None] * len(requests)
        images, owners = [], []
        for i, request in enumerate(requests):
            image, error = self._image(request)
            if error is not None:
                responses[i] = self._error(error)  # one bad request must not fail its neighbours
            else:
                images.append(image)
                owners.append(i)
        if images:
            try:
                batch = np.ascontiguousarray(np.concatenate(images))
                logits = self.session.run([self.output_name], {self.input_name: batch})[0]
            except Exception as exc:  # report it on every request instead of killing the stub
                for i in owners:
                    responses[i] = self._error(f"onnxruntime failed: {exc}")
                return responses
            logits = logits.astype(np.float32, copy=False)
            ends = np.cumsum([len(image) for image in images])
            for i, part in zip(owners, np.split(logits, ends[:-1]), strict=True):
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(self.output_name, part)]
                )
        return responses

    def finalize(self):
        self.session = None
