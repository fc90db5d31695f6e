"""segcli export (inference/export.py): an ONNX bundle of a trained run, its parity check, predict
from the bundle against predict from the checkpoint, every architecture exported or refused in one
line, and the missing extra; --format openvino (inference/openvino_graph.py): the bundle's
OpenVINO IR, float32 and NNCF int8, checked the same way, and predict -c model.xml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO, segcli, segcli_without
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from segcli.errors import SegcliError
from segcli.inference.export import parse_size
from segcli.inference.onnx_graph import OnnxModel, export_onnx
from segcli.inference.parity import check_parity
from segcli.models.build import build_model
from segcli.tasks import options_for


def test_export_bundle_parity_and_predict_from_the_bundle(evaluated_runs, tmp_path):
    run, root = evaluated_runs["longer"], evaluated_runs["root"]
    best = str(run / "checkpoints" / "best.pt")
    r = segcli("export", best, "-o", str(tmp_path / "bundle"), "--quantize", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [
        "bundle.json",
        "model.int8.onnx",
        "model.onnx",
    ]
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".bundle-")
    ]  # no temporary folder left
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle["class_names"] == ["a", "b", "c"] and bundle["num_classes"] == 3
    assert bundle["colors"] == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    assert bundle["input"]["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert bundle["input"]["fixed_size"] is None and "multiples of 32" in bundle["input"]["size"]
    fp32, int8 = bundle["parity"]
    assert fp32["model"] == "model.onnx" and int8["model"] == "model.int8.onnx"
    assert (
        fp32["source"].startswith("val split") and fp32["images"] == 3
    )  # the run's real val images
    assert fp32["ok"] and fp32["allclose"] and fp32["agreement"] >= 0.999 and fp32["max_abs"] < 1e-3
    # every export is also scored on the parity images' masks, beside the checkpoint
    assert 0 < fp32["checkpoint_miou"] <= 1 and fp32["miou"] == pytest.approx(
        fp32["checkpoint_miou"]
    )
    assert 0 < int8["max_abs"]  # quantised weights change the logits; reported, not gated
    assert set(bundle["speed_images_per_second"]) == {
        "torch float32 (eager)",
        "onnxruntime float32",
        "onnxruntime int8 (dynamic)",
    }
    assert "model.onnx" in r.stdout and "ok" in r.stdout

    out = {}
    for name, source in (("ckpt", best), ("onnx", str(tmp_path / "bundle"))):
        r = segcli(
            "predict",
            str(root / "test"),
            "-c",
            source,
            "-o",
            str(tmp_path / name),
            "--amp",
            "false",
            "--save-probs",
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        out[name] = {
            p.name: (np.array(Image.open(p)), np.load(p.with_name(p.stem + "_probs.npz"))["probs"])
            for p in sorted((tmp_path / name).glob("test?.png"))
        }
    assert sorted(out["onnx"]) == ["test0.png", "test1.png"]
    for name, (mask, probs) in out["ckpt"].items():
        onnx_mask, onnx_probs = out["onnx"][name]
        assert mask.shape == (48, 80)
        assert (onnx_mask == mask).mean() >= 0.999, name
        assert (
            np.abs(onnx_probs.astype(np.float32) - probs.astype(np.float32)).max() < 2e-3
        )  # float16 files
        assert len(np.unique(mask)) > 1  # the model's output depends on its input

    r = segcli(
        "predict",
        str(root / "test"),
        "-c",
        str(tmp_path / "bundle" / "model.onnx"),
        "-o",
        str(tmp_path / "slide"),
        "--inference",
        "slide",
        "inference.crop=[32,32]",
        "inference.flip=true",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert np.array(Image.open(tmp_path / "slide" / "test0.png")).shape == (48, 80)


def _unet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": None}, 3
    ).eval()


@pytest.fixture(scope="module")
def fixed_export(module_tmp) -> tuple[torch.nn.Module, OnnxModel]:
    """A random U-Net (seed 0) and its ONNX graph exported at the fixed size 64x96."""
    model, path = _unet(0), module_tmp("fixed") / "m.onnx"
    export_onnx(model, torch.randn(1, 3, 64, 96), path, 18, dynamic=False)
    return model, OnnxModel(path, (64, 96))


def test_fixed_size_bundle_pads_smaller_inputs_and_refuses_larger_ones(fixed_export):
    model, onnx_model = fixed_export
    x = torch.randn(1, 3, 32, 64)
    out = onnx_model(x)
    assert out.shape == (1, 3, 32, 64)
    # its values: the torch model on the input zero-padded bottom/right to 64x96, cropped back
    padded = torch.zeros(1, 3, 64, 96)
    padded[..., :32, :64] = x
    with torch.inference_mode():
        expected = model(padded)[..., :32, :64]
        unpadded = model(x)
    assert torch.allclose(out, expected, rtol=1e-3, atol=1e-4), (out - expected).abs().max()
    assert (
        unpadded - expected
    ).abs().max() > 0.1  # padding changes the logits: the check above can fail
    with pytest.raises(
        SegcliError, match=r"larger than the model's fixed 64x96; use --inference slide"
    ):
        onnx_model(torch.randn(1, 3, 96, 96))


def test_parity_check_fails_for_another_model(fixed_export):
    model, onnx_model = fixed_export
    inputs = [torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)]
    assert check_parity(model, onnx_model, inputs, "generated").ok
    other = _unet(1)  # the same architecture, other weights
    parity = check_parity(other, onnx_model, inputs, "generated")
    assert not parity.ok and not parity.allclose
    assert (parity.model, parity.images, parity.source) == ("m.onnx", 2, "generated")
    with torch.inference_mode():
        refs, outs = [other(x) for x in inputs], [onnx_model(x) for x in inputs]
    assert parity.max_abs == pytest.approx(
        max(float((o - r).abs().max()) for o, r in zip(outs, refs, strict=True))
    )
    agree = sum(
        int((o.argmax(1) == r.argmax(1)).sum()) for o, r in zip(outs, refs, strict=True)
    ) / (2 * 64 * 96)
    assert parity.agreement == pytest.approx(agree) and agree < 0.9


# Not in the battery: the classical baselines (no torch graph: export refuses them,
# test_architectures.py), the heavy torchvision/VGG models (130..540 MB graphs; fcn_resnet50 and
# fcn8s exported by hand, README "Models") and the FC-DenseNets whose layer code fcdensenet56
# shares. fastfcn is exported with a resnet18 encoder and narrow JPU/ASPP.
NOT_IN_BATTERY = {
    "pixel_forest",
    "otsu",
    "fcn8s",
    "fcn_resnet50",
    "fcn_resnet101",
    "fcdensenet67",
    "fcdensenet103",
}
LIGHTER = {"fastfcn": {"encoder_name": "resnet18", "params": {"width": 64, "aspp_channels": 32}}}
PRESETS = sorted(  # the semantic models (task=instance checkpoints are refused: test below)
    p.stem
    for p in (REPO / "conf" / "model").glob("*.yaml")
    if p.stem not in NOT_IN_BATTERY and p.stem in options_for("model", "semantic")
)


def export_or_refusal(preset: str, folder: str) -> dict:
    """Export the ``model`` preset (random weights, 3 classes) with dynamic sizes. Where that is
    refused, check the one-line message, then export at a fixed size as it advises. Either way,
    check parity: dynamic graphs at two sizes and batches, fixed ones at their size."""
    cfg = {
        **yaml.safe_load((REPO / "conf" / "model" / f"{preset}.yaml").read_text()),
        "encoder_weights": None,
        **LIGHTER.get(preset, {}),
    }
    torch.manual_seed(0)
    model = build_model(cfg, 3).eval()
    path, x = Path(folder) / "m.onnx", torch.randn(1, 3, 128, 160)
    try:
        export_onnx(model, x, path, 18, dynamic=True, arch=cfg["arch"])
        refusal = None
        inputs, size = [x, torch.randn(2, 3, 192, 128)], None
    except SegcliError as exc:
        refusal = str(exc)
        size = (224, 224) if cfg["arch"] == "DPT" else (128, 160)
        x = torch.randn(1, 3, *size)
        export_onnx(model, x, path, 18, dynamic=False, arch=cfg["arch"])
        inputs = [x, x.flip(-1)]
    parity = check_parity(model, OnnxModel(path, size), inputs, "generated")
    return {"arch": cfg["arch"], "refusal": refusal, "ok": parity.ok, "parity": repr(parity)}


@pytest.fixture(scope="module")
def exports(module_tmp) -> dict[str, dict]:
    """``export_or_refusal`` of every preset, two at a time (tracing for export is single-threaded
    Python: two processes halve the wall time on two cores)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    folders = [str(module_tmp(p)) for p in PRESETS]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        return dict(zip(PRESETS, pool.map(export_or_refusal, PRESETS, folders), strict=True))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_architecture_exports_with_parity_or_is_refused_in_one_line(preset, exports):
    result = exports[preset]
    if result["refusal"] is not None:
        message = result["refusal"]
        assert (
            message.startswith(f"model.arch={result['arch']}: no working ONNX graph (")
            and "\n" not in message
        )
        assert message.endswith("export a fixed size instead: --size HxW")
    assert result["ok"], result["parity"]
    # what the README states about each architecture
    refused = {"PSPNet", "UPerNet", "DPT"}
    assert (result["refusal"] is not None) == (result["arch"] in refused), result


@pytest.mark.parametrize("arch", ["pixel_forest", "otsu"])
def test_a_classical_baseline_is_refused_in_one_line(arch, tmp_path):
    from segcli.config import compose_config, to_plain
    from segcli.inference.export import export_bundle
    from segcli.runs.checkpoints import CHECKPOINT_FORMAT

    cfg = to_plain(compose_config([f"model={arch}"]))
    classes = {"class_names": ["a", "b"], "colors": [[0, 0, 0], [9, 9, 9]], "num_classes": 2}
    path = tmp_path / "best.pt"
    model = build_model(cfg["model"], 2)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": cfg,
            "classes": {**classes, "ignore_index": 255},
            "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "model": model.state_dict(),
        },
        path,
    )
    with pytest.raises(SegcliError) as err:
        export_bundle(path, tmp_path / "bundle")
    assert str(err.value) == (
        f"{path}: model.arch={arch} is a scikit-learn/NumPy baseline; it has no ONNX graph to "
        "export (eval and predict run it from the checkpoint)"
    )
    assert not (tmp_path / "bundle").exists()


def test_size_option_and_missing_extra(tmp_path, evaluated_runs):
    assert parse_size("384x480") == (384, 480)
    for bad in ("384", "100x100", "0x32"):
        with pytest.raises(SegcliError, match="--size"):
            parse_size(bad)
    blocker = tmp_path / "blocked"
    (blocker / "onnxruntime").mkdir(parents=True)
    (blocker / "onnxruntime" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n"
    )
    best = str(evaluated_runs["short"] / "checkpoints" / "best.pt")
    r = segcli(
        "export", best, "-o", str(tmp_path / "b"), cwd=tmp_path, env={"PYTHONPATH": str(blocker)}
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == "segcli: error: ONNX export and bundles need onnxruntime: pip install 'segcli[export]'"
    )
    assert not (tmp_path / "b").exists()
    r = segcli("export", best, "--size", "384x480", "--dynamic", cwd=tmp_path)
    assert r.returncode == 2 and "give one" in r.stderr
    assert not Path(tmp_path / "bundle").exists()


def test_openvino_ir_float32_and_int8_checked_and_predict_runs_it(evaluated_runs, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    run, root = evaluated_runs["longer"], evaluated_runs["root"]
    best = str(run / "checkpoints" / "best.pt")
    out = tmp_path / "bundle"
    args = ["export", best, "-o", str(out), "--format", "openvino", "--quantize"]
    r = segcli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "bundle.json",
        "model.bin",
        "model.int8.bin",
        "model.int8.xml",
        "model.onnx",
        "model.xml",
    ]  # the ONNX bundle as ever, plus the IR; no onnxruntime int8 beside NNCF's
    bundle = json.loads((out / "bundle.json").read_text())
    onnx, ir, int8 = bundle["parity"]
    assert [onnx["model"], ir["model"], int8["model"]] == [
        "model.onnx",
        "model.xml",
        "model.int8.xml",
    ]
    # float32 weights and f32 inference: the IR computes the graph's own logits
    assert ir["ok"] and ir["max_abs"] < 1e-3 and ir["source"].startswith("val split")
    assert 0 < int8["max_abs"]  # int8 changes the logits: reported, not gated
    assert bundle["openvino"]["model"] == "model.xml"
    assert bundle["openvino"]["calibration"].startswith("train split")
    assert {"openvino float32", "openvino int8 (NNCF)"} <= set(bundle["speed_images_per_second"])

    masks = {}
    for name, source in (("ckpt", best), ("ir", str(out / "model.xml"))):
        r = segcli(
            "predict", str(root / "test"), "-c", source, "-o", str(tmp_path / name),
            "--amp", "false", cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        masks[name] = {
            p.name: np.array(Image.open(p)) for p in sorted((tmp_path / name).glob("test?.png"))
        }
    assert sorted(masks["ir"]) == ["test0.png", "test1.png"]
    for name, mask in masks["ckpt"].items():
        assert (mask == masks["ir"][name]).mean() >= 0.999


def test_without_openvino_the_export_is_one_line_naming_the_extra(evaluated_runs, tmp_path):
    best = str(evaluated_runs["longer"] / "checkpoints" / "best.pt")
    r = segcli_without(
        ["openvino"], "export", best, "-o", str(tmp_path / "b"), "--format", "openvino"
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "segcli: error: segcli export --format openvino needs OpenVINO: "
        "pip install 'segcli[openvino]'"
    )
    assert not (tmp_path / "b").exists()
