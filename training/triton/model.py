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
        self.output_names = [output["name"] for output in config["output"]]
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

    def _wanted(self, request):
        """The outputs a request asked for (all of the config's when it named none), or an error message."""
        names = list(request.requested_output_names()) or self.output_names
        unknown = [name for name in names if name not in self.output_names]
        if unknown:
            return None, f"unknown output(s) {unknown}; this model has {self.output_names}"
        return names, None

    def execute(self, requests):
        responses = [None] * len(requests)
        images, owners, wanted = [], [], []
        for i, request in enumerate(requests):
            image, error = self._image(request)
            names, name_error = self._wanted(request) if error is None else (None, None)
            if error is not None or name_error is not None:
                responses[i] = self._error(
                    error or name_error
                )  # one bad request must not fail its neighbours
            else:
                images.append(image)
                owners.append(i)
                wanted.append(names)
        if images:
            # One run for the batch, computing only what some request asked for, in config order.
            run = [name for name in self.output_names if any(name in names for names in wanted)]
            try:
                batch = np.ascontiguousarray(np.concatenate(images))
                values = self.session.run(run, {self.input_name: batch})
            except Exception as exc:  # report it on every request instead of killing the stub
                for i in owners:
                    responses[i] = self._error(f"onnxruntime failed: {exc}")
                return responses
            ends = np.cumsum([len(image) for image in images])[:-1]
            parts = {
                name: np.split(value.astype(np.float32, copy=False), ends)
                for name, value in zip(run, values, strict=True)
            }
            for k, (i, names) in enumerate(zip(owners, wanted, strict=True)):
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, parts[name][k]) for name in names]
                )
        return responses

    def finalize(self):
        self.session = None
