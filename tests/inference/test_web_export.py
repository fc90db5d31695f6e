"""segcli export --format web (inference/web_page.py, inference/web/): the offline page opened in
headless Chromium from file:// and from a static server, an image loaded through its file input,
its mask read back and compared with segcli predict's; the export's own in-browser parity, and
that it fails when the page preprocesses wrongly; where onnxruntime-web's files come from (npm's
tarball, a package folder, the checked download) and the one-line errors."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import json
import shutil
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import REPO, segcli, segcli_without
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from segcli.errors import SegcliError
from segcli.inference import web_page
from segcli.inference.web_page import ORT_FILES, find_browser, onnxruntime_web

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium/Chrome installed")


@pytest.fixture(scope="module")
def ort_web():
    """onnxruntime-web 1.30.0 from npm (the export's own download and check), or a skip offline."""
    try:
        return onnxruntime_web()
    except SegcliError as e:
        pytest.skip(f"onnxruntime-web not reachable: {e}")


@pytest.fixture(scope="module")
def web_export(evaluated_runs, ort_web, module_tmp):
    """``segcli export --format web`` of the 3-epoch run: ``(bundle folder, its bundle.json)``."""
    pytest.importorskip("playwright")
    if BROWSER is None:
        pytest.skip("no Chromium/Chrome installed")
    tmp = module_tmp("web")
    best = str(evaluated_runs["longer"] / "checkpoints" / "best.pt")
    r = segcli("export", best, "-o", str(tmp / "page"), "--format", "web", cwd=tmp)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "index.html" in r.stdout and "onnxruntime-web float32" in r.stdout
    return tmp / "page", json.loads((tmp / "page" / "bundle.json").read_text())


def _open_in_page(url: str, image: Path, shot: Path | None = None) -> dict:
    """Open ``url`` in headless Chromium, load ``image`` through the page's file input and read
    back what the page shows: mask, per-class counts, the class table's rows, the status line."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(url)
        page.evaluate("() => window.segcli.ready")
        page.set_input_files("#image", str(image))
        page.wait_for_function("() => window.segcli.last || window.segcli.error", timeout=120_000)
        out = page.evaluate(
            "() => window.segcli.error ? {error: window.segcli.error} : ({"
            " w: window.segcli.last.width, h: window.segcli.last.height,"
            " mask: Array.from(window.segcli.last.mask), counts: window.segcli.last.counts,"
            " rows: Array.from(document.querySelectorAll('#shares tbody tr'),"
            "   (tr) => Array.from(tr.cells, (td) => td.textContent.trim())),"
            " status: document.getElementById('status').textContent})"
        )
        if shot is not None:
            page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert "error" not in out, out
    out["mask"] = np.array(out["mask"], np.uint8).reshape(out["h"], out["w"])
    return out


@needs_browser
def test_the_page_shows_the_mask_segcli_predict_writes(web_export, evaluated_runs, tmp_path):
    folder, bundle = web_export
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "bundle.js", "bundle.json", "index.html", "model.js", "model.onnx", "ort", "segcli-web.js",
    ]  # fmt: skip
    assert sorted(p.name for p in (folder / "ort").iterdir()) == [
        "NOTICE", "ort-glue.js", "ort-wasm.js", "ort.wasm.min.js",
    ]  # fmt: skip
    # the model the page runs is the bundle's own model.onnx
    js = (folder / "model.js").read_text()
    assert base64.b64decode(js.split('"')[1]) == (folder / "model.onnx").read_bytes()
    assert bundle["web"]["onnxruntime_web"] == "1.30.0" and bundle["web"]["page"] == "index.html"
    # the export checked the page in the browser, on the run's val images, like any float32 model
    web = next(p for p in bundle["parity"] if p["model"] == "index.html")
    assert web["ok"] and web["source"].startswith("val split") and web["images"] == 3
    assert web["max_abs"] < 1e-3 and web["miou"] == pytest.approx(web["checkpoint_miou"])
    assert bundle["speed_images_per_second"]["onnxruntime-web float32 (wasm, 1 thread)"] > 0

    root, best = evaluated_runs["root"], evaluated_runs["longer"] / "checkpoints" / "best.pt"
    image = root / "test" / "test0.jpg"  # 48x80 JPEG: the page pads it to 64x96 and crops back
    r = segcli(
        "predict", str(image), "-c", str(best), "-o", str(tmp_path / "p"), "--amp", "false",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    expected = np.array(Image.open(tmp_path / "p" / "test0.png"))
    keep = REPO / "outputs" / "web_page_screenshot.png"  # git-ignored: to look at after a run
    keep.parent.mkdir(exist_ok=True)
    shown = _open_in_page((folder / "index.html").as_uri(), image, keep)
    assert shown["mask"].shape == expected.shape == (48, 80)
    assert (shown["mask"] == expected).mean() >= 0.999
    counts = np.bincount(shown["mask"].ravel(), minlength=3)
    assert shown["counts"] == counts.tolist()
    # the table lists the classes present with their pixels and shares
    assert [row[0] for row in shown["rows"]] == [
        n for n, k in zip(["a", "b", "c"], counts, strict=True) if k
    ]
    assert [int(row[1]) for row in shown["rows"]] == [int(k) for k in counts if k]
    assert shown["status"].startswith("test0.jpg: 80x48 pixels")


@needs_browser
def test_the_page_runs_from_a_static_server_too(web_export, evaluated_runs):
    folder, _ = web_export
    image = evaluated_runs["root"] / "test" / "test1.jpg"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        served = _open_in_page(f"http://127.0.0.1:{server.server_port}/index.html", image)
    finally:
        server.shutdown()
    from_file = _open_in_page((folder / "index.html").as_uri(), image)
    assert np.array_equal(served["mask"], from_file["mask"])


@needs_browser
def test_a_page_that_normalises_wrongly_fails_the_check(web_export, tmp_path):
    from segcli.inference.onnx_graph import OnnxModel, export_onnx
    from segcli.inference.parity import check_parity

    folder, bundle = web_export
    norm = bundle["input"]["normalization"]
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 1).eval()  # 3 classes, as the page's bundle says
    export_onnx(net, torch.zeros(1, 3, 64, 96), tmp_path / "m.onnx", 18, dynamic=True)
    rgb = torch.randint(0, 256, (1, 3, 64, 96)).float() / 255
    x = (rgb - torch.tensor(norm["mean"]).view(1, 3, 1, 1)) / torch.tensor(norm["std"]).view(
        1, 3, 1, 1
    )
    results = []
    for mean in (norm["mean"], [0.0, 0.0, 0.0]):  # the page's own copy of the statistics
        copy = tmp_path / f"page{len(results)}"
        shutil.copytree(folder, copy)
        (copy / "model.js").write_text(
            web_page._js_string("SEGCLI_MODEL", (tmp_path / "m.onnx").read_bytes())
        )
        changed = json.loads(json.dumps(bundle))
        changed["input"]["normalization"]["mean"] = mean
        web_page.write_bundle_js(copy, changed)
        with web_page.BrowserModel(copy / "index.html", BROWSER, norm["mean"], norm["std"]) as page:
            results.append(check_parity(net, page, [x], "one image"))
    assert check_parity(net, OnnxModel(tmp_path / "m.onnx", None), [x], "one image").ok
    good, bad = results
    assert good.ok and good.max_abs < 1e-4
    assert not bad.ok and bad.max_abs > 0.1
    # a fixed-size page (--size 96x128): the parity input is the image then zeros to that size,
    # which the page must add itself (not as pixels: zeros are not black once normalised)
    changed = json.loads(json.dumps(bundle))
    changed["input"]["fixed_size"] = [96, 128]
    web_page.write_bundle_js(tmp_path / "page0", changed)
    padded = torch.nn.functional.pad(x, (0, 32, 0, 32))
    page_file = tmp_path / "page0" / "index.html"
    with web_page.BrowserModel(page_file, BROWSER, norm["mean"], norm["std"], True) as page:
        fixed = check_parity(net, page, [padded], "one image")
    assert fixed.ok and fixed.max_abs < 1e-4


# --- where onnxruntime-web comes from -------------------------------------------------------


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


PACKAGE = {
    "package.json": json.dumps({"name": "onnxruntime-web", "version": "1.30.0"}).encode(),
    **{f"dist/{f}": f"<{f}>".encode() for f in ORT_FILES},
}


def test_npm_tarball_and_package_folder_give_the_same_files(tmp_path):
    tgz = onnxruntime_web(_tarball(tmp_path / "ort.tgz", PACKAGE))
    assert tgz.version == "1.30.0" and tgz.files == {f: f"<{f}>".encode() for f in ORT_FILES}
    for name, data in PACKAGE.items():
        (tmp_path / "node_modules" / "onnxruntime-web" / name).parent.mkdir(
            parents=True, exist_ok=True
        )
        (tmp_path / "node_modules" / "onnxruntime-web" / name).write_bytes(data)
    folder = onnxruntime_web(tmp_path / "node_modules" / "onnxruntime-web")
    assert folder.files == tgz.files


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"package.json": b'{"name": "onnxruntime-node"}'}, "not the onnxruntime-web npm package"),
        ({"dist/ort-wasm-simd-threaded.wasm": None}, "has no dist/ort-wasm-simd-threaded.wasm"),
    ],
)
def test_a_wrong_package_is_one_line_naming_it(tmp_path, change, message):
    files = {k: v for k, v in {**PACKAGE, **change}.items() if v is not None}
    path = _tarball(tmp_path / "x.tgz", files)
    with pytest.raises(SegcliError, match=message) as e:
        onnxruntime_web(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SegcliError, match="no such file"):
        onnxruntime_web(tmp_path / "missing.tgz")


def test_the_download_is_checked_against_npm_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCLI_CACHE_DIR", str(tmp_path / "cache"))
    data = _tarball(tmp_path / "d.tgz", PACKAGE).read_bytes()
    calls = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    def urlopen(url, timeout):
        calls.append(url)
        return Response(data)

    monkeypatch.setattr(web_page.urllib.request, "urlopen", urlopen)
    with pytest.raises(SegcliError, match="sha512 is not npm's"):
        onnxruntime_web()  # bytes that are not npm's tarball are refused, and not cached
    assert not list((tmp_path / "cache").iterdir())
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    monkeypatch.setattr(web_page, "ORT_WEB_INTEGRITY", f"sha512-{digest}")
    assert onnxruntime_web().version == "1.30.0"
    assert calls == [web_page.ORT_WEB_URL] * 2
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["onnxruntime-web-1.30.0.tgz"]
    assert onnxruntime_web().files[ORT_FILES[0]] == b"<ort.wasm.min.js>"
    assert len(calls) == 2  # the cached tarball is not downloaded again

    def offline(url, timeout):
        raise OSError("Network is unreachable")

    monkeypatch.setenv("SEGCLI_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(web_page.urllib.request, "urlopen", offline)
    with pytest.raises(SegcliError, match="pass --onnxruntime-web FILE.tgz"):
        onnxruntime_web()


def test_runs_the_page_cannot_reproduce_are_refused(tmp_path):
    from segcli.inference.export_targets import web_setup

    rgb = {"stored": None, "describe_channels": lambda: "3 x uint8 RGB"}
    bands = {"stored": {"max_pixel_value": 1.0}, "describe_channels": lambda: "image: 4 x uint16"}
    for pre, message in (
        (SimpleNamespace(scale=0.5, eval_augmentation=None, **rgb), "dataset.scale=0.5"),
        (
            SimpleNamespace(scale=1.0, eval_augmentation=[{"Resize": {}}], **rgb),
            "augmentation.eval",
        ),
        (
            SimpleNamespace(scale=1.0, eval_augmentation=None, **bands),
            "takes image: 4 x uint16; the web page reads 8-bit RGB images only",
        ),
    ):
        with pytest.raises(SegcliError, match=message):
            web_setup(SimpleNamespace(preprocessing=pre), Path("x.pt"), None)


def test_without_a_browser_the_export_is_one_line(evaluated_runs, tmp_path):
    best = str(evaluated_runs["longer"] / "checkpoints" / "best.pt")
    env = {"PATH": str(Path(sys.executable).parent), "SEGCLI_CHROMIUM": ""}
    r = segcli("export", best, "-o", str(tmp_path / "b"), "--format", "web", cwd=tmp_path, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("segcli: error: --format web checks the page in headless") and (
        "apt-get install chromium" in line or "segcli[web]" in line
    )
    args = ["export", best, "-o", str(tmp_path / "b"), "--format", "web"]
    r = segcli_without(["playwright", "playwright.sync_api"], *args)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "pip install 'segcli[web]'"
    )
    assert not (tmp_path / "b").exists()
