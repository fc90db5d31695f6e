"""segcli export --format litert (inference/litert_graph.py): the LiteRT file of a trained run at
a static size, NHWC and int8, checked against the checkpoint; predict -c model.tflite against
predict from the checkpoint; the int8 input/output arithmetic; the missing extra in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import segcli, segcli_without
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from segcli.errors import SegcliError


@pytest.fixture(scope="module")
def litert_export(evaluated_runs, module_tmp):
    """``segcli export --format litert --quantize --nhwc`` of the 3-epoch run."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    tmp = module_tmp("litert")
    best = str(evaluated_runs["longer"] / "checkpoints" / "best.pt")
    args = ["export", best, "-o", str(tmp / "b"), "--format", "litert", "--quantize", "--nhwc"]
    r = segcli(*args, cwd=tmp)
    assert r.returncode == 0, r.stderr + r.stdout
    return tmp / "b", json.loads((tmp / "b" / "bundle.json").read_text())


def test_litert_float32_and_int8_checked_and_predict_runs_them(
    litert_export, evaluated_runs, tmp_path
):
    from ai_edge_litert.interpreter import Interpreter

    folder, bundle = litert_export
    assert sorted(p.name for p in folder.iterdir()) == [
        "bundle.json", "model.int8.tflite", "model.onnx", "model.tflite",
    ]  # fmt: skip
    onnx, fp32, int8 = bundle["parity"]
    assert [onnx["model"], fp32["model"], int8["model"]] == [
        "model.onnx", "model.tflite", "model.int8.tflite",
    ]  # fmt: skip
    assert fp32["ok"] and fp32["max_abs"] < 1e-3 and fp32["source"].startswith("val split")
    assert fp32["miou"] == pytest.approx(fp32["checkpoint_miou"])
    assert 0 < int8["max_abs"] and int8["miou"] is not None  # int8: reported, not gated
    lite = bundle["litert"]
    # the val images are 48x80, padded to 64x96 by the eval transform: the static size
    assert lite["input_size"] == [64, 96] and lite["layout"].startswith("NHWC")
    assert lite["calibration"].startswith("train split")
    assert {"litert float32", "litert int8 (pt2e)"} <= set(bundle["speed_images_per_second"])
    for name, dtype in (("model.tflite", np.float32), ("model.int8.tflite", np.int8)):
        interpreter = Interpreter(model_path=str(folder / name))
        (i,), (o,) = interpreter.get_input_details(), interpreter.get_output_details()
        assert list(i["shape"]) == [1, 64, 96, 3] and list(o["shape"]) == [1, 64, 96, 3]
        assert i["dtype"] == dtype

    root, best = evaluated_runs["root"], evaluated_runs["longer"] / "checkpoints" / "best.pt"
    masks = {}
    for name, source in (("ckpt", best), ("lite", folder / "model.tflite")):
        r = segcli(
            "predict", str(root / "test"), "-c", str(source), "-o", str(tmp_path / name),
            "--amp", "false", cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        masks[name] = {p.name: np.array(Image.open(p)) for p in (tmp_path / name).glob("test?.png")}
    assert sorted(masks["lite"]) == ["test0.png", "test1.png"]
    for name, mask in masks["ckpt"].items():
        assert mask.shape == (48, 80) and (mask == masks["lite"][name]).mean() >= 0.999


def test_a_litert_file_pads_smaller_inputs_and_refuses_larger_ones(litert_export):
    from segcli.inference.litert_graph import LiteRtModel

    folder, _ = litert_export
    model = LiteRtModel(folder / "model.tflite")
    assert model.size == (64, 96) and model.nhwc
    x = torch.randn(1, 3, 32, 64)
    small = model(x)
    assert small.shape == (1, 3, 32, 64)
    padded = model(torch.nn.functional.pad(x, (0, 32, 0, 32)))
    assert torch.equal(small, padded[..., :32, :64])  # the same zeros the model pads with
    with pytest.raises(SegcliError, match="larger than the model's fixed 64x96"):
        model(torch.randn(1, 3, 96, 96))
    with pytest.raises(SegcliError, match="one image at a time"):
        model(torch.randn(2, 3, 64, 96))


def test_int8_input_and_output_use_the_tensors_scale_and_zero_point():
    from segcli.inference.litert_graph import _dequantize, _quantize

    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    q = _quantize(np.array([0.0, 1.0, 1.2, -70.0, 70.0], np.float32), detail)
    # round(x / 0.5) - 3, clipped to int8: 0 -> -3, 1 -> -1, 1.2 -> round(2.4) - 3 = -1,
    # -70 -> -143 -> -128, 70 -> 137 -> 127
    assert q.dtype == np.int8 and q.tolist() == [-3, -1, -1, -128, 127]
    assert _dequantize(q, detail).tolist() == [0.0, 1.0, 1.0, -62.5, 65.0]
    plain = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert _quantize(np.array([1.5]), plain).tolist() == [1.5]


def test_without_litert_the_export_is_one_line_naming_the_extra(evaluated_runs, tmp_path):
    best = str(evaluated_runs["longer"] / "checkpoints" / "best.pt")
    args = ["export", best, "-o", str(tmp_path / "b"), "--format", "litert"]
    r = segcli_without(["litert_torch"], *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "segcli: error: segcli export --format litert needs litert-torch and ai-edge-litert: "
        "pip install 'segcli[litert]'"
    )
    r = segcli("export", best, "-o", str(tmp_path / "b"), "--nhwc", cwd=tmp_path)
    assert r.returncode == 2 and "--nhwc: a LiteRT option" in r.stderr
    assert not (tmp_path / "b").exists()
