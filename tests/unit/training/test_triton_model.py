"""The Triton python-backend model, run against a small stand-in for triton_python_backend_utils."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from pcam_core.contract import OUTPUT_SHAPES
from training.config import TritonConfig
from training.export import export_onnx
from training.graphs import onnx_outputs, session
from training.models import build_model
from training.repository import BACKEND_SOURCE, config_pbtxt
from training.served import ServedModel, fit_feature_density


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray):
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class FakeTritonError:
    def __init__(self, message: str):
        self.message = message


class FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


class FakeRequest:
    def __init__(self, outputs: tuple[str, ...] = (), **inputs: np.ndarray):
        self.inputs = {k: FakeTensor(k, v) for k, v in inputs.items()}
        self.outputs = outputs

    def requested_output_names(self) -> list[str]:
        return list(self.outputs)


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor
    module.TritonError = FakeTritonError
    module.InferenceResponse = FakeResponse
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    return module


def _model_config_json(name: str) -> str:
    """What Triton hands the model as args['model_config']: our config.pbtxt as JSON."""
    text = config_pbtxt(name, TritonConfig(intra_op_threads=1))
    try:
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:  # without tritonclient: the same JSON, written out (int64 dims are strings)
        return json.dumps(
            {
                "name": name,
                "input": [{"name": "image", "data_type": "TYPE_UINT8", "dims": ["96", "96", "3"]}],
                "output": [
                    {"name": "logit", "data_type": "TYPE_FP32", "dims": ["1"]},
                    {"name": "feature_distance", "data_type": "TYPE_FP32", "dims": ["1"]},
                ],
                "parameters": {"intra_op_thread_count": {"string_value": "1"}},
            }
        )
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module):
    monkeypatch_module.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    member_dir = tmp_path_factory.mktemp("repo") / "member"
    torch.manual_seed(0)
    model = build_model("test_resnet")
    density = fit_feature_density(model, _images(32, 0), np.arange(32) % 2)
    onnx_path = export_onnx(ServedModel(model, density), member_dir / "1" / "model.onnx")
    shutil.copyfile(BACKEND_SOURCE, member_dir / "1" / "model.py")
    spec = importlib.util.spec_from_file_location("member_backend", member_dir / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    backend = module.TritonPythonModel()
    backend.initialize(
        {
            "model_config": _model_config_json("member"),
            "model_repository": str(member_dir),
            "model_version": "1",
        }
    )
    yield backend, session(onnx_path)
    backend.finalize()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


@contextmanager
def session_runs(model) -> Iterator[list[tuple[tuple[str, ...], tuple[int, ...]]]]:
    """Every onnxruntime run of the backend in the block: the outputs it computed and the batch shape."""
    calls: list[tuple[tuple[str, ...], tuple[int, ...]]] = []
    real_run = model.session.run
    model.session.run = lambda names, feeds, *a, **k: (
        calls.append((tuple(names), feeds["image"].shape)) or real_run(names, feeds, *a, **k)
    )
    try:
        yield calls
    finally:
        model.session.run = real_run


def test_requests_run_as_one_batch_and_split_back(backend):
    model, reference = backend
    batches = [_images(2, 1), _images(3, 2), _images(1, 3)]
    with session_runs(model) as calls:
        responses = model.execute([FakeRequest(image=b) for b in batches])
    every = ("logit", "feature_distance", "activation_map")
    assert [(names, shape) for names, shape in calls] == [(every, (6, 96, 96, 3))]
    for batch, response in zip(batches, responses, strict=True):
        assert response.error is None
        # Asked for nothing in particular: every output of the config, in its order.
        assert [t.name() for t in response.output_tensors] == list(every)
        expected = onnx_outputs(reference, [batch], every)
        for tensor in response.output_tensors:
            values = tensor.as_numpy()
            assert values.shape == (len(batch), *OUTPUT_SHAPES[tensor.name()]) and values.dtype == np.float32
            np.testing.assert_allclose(
                values.reshape(expected[tensor.name()].shape), expected[tensor.name()], rtol=1e-5, atol=1e-5
            )


def test_each_request_gets_the_outputs_it_asked_for_from_one_run(backend):
    model, reference = backend
    with session_runs(model) as calls:
        responses = model.execute(
            [
                FakeRequest(("logit",), image=_images(2, 7)),
                FakeRequest(("feature_distance", "logit"), image=_images(1, 8)),
            ]
        )
    assert [names for names, _ in calls] == [("logit", "feature_distance")]
    assert [t.name() for t in responses[0].output_tensors] == ["logit"]
    assert [t.name() for t in responses[1].output_tensors] == ["feature_distance", "logit"]
    expected = onnx_outputs(reference, [_images(1, 8)], ("feature_distance",))["feature_distance"]
    np.testing.assert_allclose(responses[1].output_tensors[0].as_numpy().reshape(-1), expected, rtol=1e-5)


def test_logits_alone_do_not_run_the_rest_and_an_unknown_output_is_an_error(backend):
    model, _ = backend
    with session_runs(model) as calls:
        responses = model.execute(
            [FakeRequest(("logit",), image=_images(1, 9)), FakeRequest(("cam",), image=_images(1, 9))]
        )
    assert [names for names, _ in calls] == [("logit",)]
    assert responses[0].error is None
    assert "unknown output" in responses[1].error.message and responses[1].output_tensors == []


@pytest.mark.parametrize(
    "bad",
    [
        {"image": np.zeros((1, 96, 96, 3), np.float32)},
        {"image": np.zeros((1, 64, 64, 3), np.uint8)},
        {"image": np.zeros((0, 96, 96, 3), np.uint8)},
        {"pixels": np.zeros((1, 96, 96, 3), np.uint8)},
    ],
    ids=["dtype", "shape", "empty", "missing"],
)
def test_a_bad_request_gets_an_error_and_its_neighbours_their_logits(backend, bad):
    model, _ = backend
    good = _images(2, 4)
    responses = model.execute([FakeRequest(image=good), FakeRequest(**bad), FakeRequest(image=good)])
    assert responses[0].error is None and responses[2].error is None
    assert isinstance(responses[1].error, FakeTritonError) and responses[1].output_tensors == []
    np.testing.assert_array_equal(
        responses[0].output_tensors[0].as_numpy(), responses[2].output_tensors[0].as_numpy()
    )


def test_an_onnxruntime_failure_becomes_errors_not_a_crash(backend):
    model, _ = backend
    real_run = model.session.run

    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    model.session.run = failing
    try:
        responses = model.execute([FakeRequest(image=_images(1, 5)), FakeRequest(image=_images(1, 6))])
    finally:
        model.session.run = real_run
    assert all("boom" in r.error.message for r in responses)


def test_backend_imports_only_what_the_triton_stub_has():
    source = BACKEND_SOURCE.read_text()
    imports = {
        line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))
    }
    assert imports <= {"json", "os", "numpy", "onnxruntime", "triton_python_backend_utils"}
