"""``segcli export --format web``: the bundle as an offline web page, and its check in a real
browser.

The page (``index.html`` + ``segcli-web.js``, package data in ``inference/web/``) runs the
bundle's ``model.onnx`` on onnxruntime-web (Microsoft's WebAssembly build of onnxruntime, from
npm) with ``segcli predict``'s preprocessing. A page opened from ``file://`` may not ``fetch()``
its neighbours, so the model and onnxruntime-web's WebAssembly binary and loader are written as
JavaScript files holding them in base64 (``model.js``, ``ort/``); the page then works from
``file://`` and from any static server, and fetches nothing when it runs.

Where onnxruntime-web comes from (``onnxruntime_web``): a file or folder given with
``--onnxruntime-web`` (npm's tarball, e.g. from ``npm pack onnxruntime-web@1.30.0``, or an
unpacked package such as ``node_modules/onnxruntime-web``), else npm's tarball of
``ORT_WEB_VERSION`` downloaded once from the npm registry into segcli's cache folder and checked
against npm's sha512 integrity. It is not package data of segcli: its WebAssembly files are
14-28 MB each (33 MB tarball), which every pip install would carry for a page few users export.

The check (``BrowserModel``): the page in headless Chromium (Debian's ``chromium``, driven by
Playwright, the ``segcli[web]`` extra) computes each parity image from its uint8 RGB pixels
(the page's preprocessing included) and hands back the logits, which ``parity.check_parity``
compares with the checkpoint as for every other target. No well-kept library runs an
onnxruntime-web page from Python other than a browser, hence this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from segcli.errors import SegcliError

ORT_WEB_VERSION = "1.30.0"
#: npm's ``dist.integrity`` of onnxruntime-web 1.30.0 (``npm view onnxruntime-web@1.30.0``)
ORT_WEB_INTEGRITY = (
    "sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1Sig"
    "qR4CXAfKYQ=="
)
ORT_WEB_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
#: the files of the npm package the page needs: the UMD script (WebAssembly backend only), the
#: Emscripten loader and the SIMD WebAssembly binary
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PAGE = "index.html"
#: where Chromium is looked for, in order (Debian's package first); ``SEGCLI_CHROMIUM`` wins
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    """The Chromium/Chrome executable: ``$SEGCLI_CHROMIUM``, else the first of ``BROWSERS`` on
    PATH; None when there is none."""
    configured = os.environ.get("SEGCLI_CHROMIUM")
    if configured:
        return configured
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def require_browser() -> str:
    """Playwright and a Chromium for the page's check.

    Raises:
        SegcliError: Playwright missing (the ``web`` extra) or no Chromium (one line each)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise SegcliError(
            "--format web checks the page in a headless browser through Playwright: "
            "pip install 'segcli[web]'"
        ) from None
    browser = find_browser()
    if browser is None:
        raise SegcliError(
            "--format web checks the page in headless Chromium, and none was found "
            f"({', '.join(BROWSERS)} on PATH, or $SEGCLI_CHROMIUM): apt-get install chromium"
        )
    return browser


@dataclass(frozen=True)
class OrtWeb:
    """onnxruntime-web's files for the page: ``files`` (name in ``ORT_FILES`` -> bytes), its
    ``version`` and where they came from (``source``)."""

    files: dict[str, bytes]
    version: str
    source: str


def onnxruntime_web(given: Path | None = None) -> OrtWeb:
    """onnxruntime-web's files (see the module docstring): from ``given`` (an npm tarball or an
    unpacked package folder), else the cached or downloaded tarball of ``ORT_WEB_VERSION``.

    Raises:
        SegcliError: ``given`` is not onnxruntime-web or lacks a file; the download failed or its
            sha512 is not npm's (one line naming the file and what to do)."""
    if given is not None:
        return _read_package(Path(given))
    from segcli.data.pair_cache import cache_dir

    folder = cache_dir() or Path.home() / ".cache" / "segcli"
    tarball = folder / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"
    if not tarball.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        try:
            with urllib.request.urlopen(ORT_WEB_URL, timeout=120) as r:
                data = r.read()
        except OSError as e:
            raise SegcliError(
                f"onnxruntime-web {ORT_WEB_VERSION}: not in {folder} and {ORT_WEB_URL} could not "
                f"be read ({e}); download it (npm pack onnxruntime-web@{ORT_WEB_VERSION}) and "
                "pass --onnxruntime-web FILE.tgz"
            ) from None
        if _integrity(data) != ORT_WEB_INTEGRITY:
            raise SegcliError(
                f"{ORT_WEB_URL}: its sha512 is not npm's {ORT_WEB_INTEGRITY[:20]}...; not used"
            )
        partial.write_bytes(data)
        partial.rename(tarball)
    return _read_package(tarball)


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _read_package(path: Path) -> OrtWeb:
    """``ORT_FILES`` and the version of an onnxruntime-web tarball or package folder."""
    if path.is_file():
        try:
            with tarfile.open(path) as tar:
                names = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
                read = {k: tar.extractfile(m).read() for k, m in names.items() if _wanted(k)}
        except (tarfile.TarError, OSError) as e:
            raise SegcliError(f"--onnxruntime-web {path}: not an npm tarball ({e})") from None
    elif path.is_dir():
        root = path / "package" if (path / "package" / "package.json").is_file() else path
        read = {
            k: (root / k).read_bytes()
            for k in ["package.json", *(f"dist/{f}" for f in ORT_FILES)]
            if (root / k).is_file()
        }
    else:
        raise SegcliError(f"--onnxruntime-web {path}: no such file or folder")
    try:
        meta = json.loads(read["package.json"])
        assert meta["name"] == "onnxruntime-web"
    except (KeyError, ValueError, AssertionError):
        raise SegcliError(
            f"--onnxruntime-web {path}: not the onnxruntime-web npm package (its package.json "
            "names another or is missing)"
        ) from None
    missing = [f for f in ORT_FILES if f"dist/{f}" not in read]
    if missing:
        raise SegcliError(
            f"--onnxruntime-web {path}: onnxruntime-web {meta.get('version')} has no "
            f"dist/{missing[0]} (segcli's page is written for {ORT_WEB_VERSION})"
        )
    files = {f: read[f"dist/{f}"] for f in ORT_FILES}
    return OrtWeb(files, str(meta.get("version")), str(path))


def _wanted(name: str) -> bool:
    return name == "package.json" or name in {f"dist/{f}" for f in ORT_FILES}


def _js_string(name: str, data: bytes, base64_data: bool = True) -> str:
    value = base64.b64encode(data).decode() if base64_data else data.decode()
    return f"window.{name} = {json.dumps(value)};\n"


def write_page(folder: Path, bundle: dict, model_file: Path, ort: OrtWeb) -> None:
    """The page's files in ``folder`` (the bundle folder): ``index.html``, ``segcli-web.js``,
    ``bundle.js`` (``bundle``, i.e. bundle.json, as ``window.SEGCLI_BUNDLE``), ``model.js``
    (``model_file`` in base64) and ``ort/`` (onnxruntime-web's script, its loader and
    WebAssembly binary, and a NOTICE naming their version and licence)."""
    web = resources.files("segcli.inference") / "web"
    for name in (PAGE, "segcli-web.js"):
        (folder / name).write_text((web / name).read_text())
    write_bundle_js(folder, bundle)
    (folder / "model.js").write_text(_js_string("SEGCLI_MODEL", model_file.read_bytes()))
    ort_dir = folder / "ort"
    ort_dir.mkdir(exist_ok=True)
    (ort_dir / "ort.wasm.min.js").write_bytes(ort.files["ort.wasm.min.js"])
    (ort_dir / "ort-glue.js").write_text(
        _js_string("SEGCLI_ORT_GLUE", ort.files["ort-wasm-simd-threaded.mjs"], base64_data=False)
    )
    (ort_dir / "ort-wasm.js").write_text(
        _js_string("SEGCLI_ORT_WASM", ort.files["ort-wasm-simd-threaded.wasm"])
    )
    (ort_dir / "NOTICE").write_text(
        f"onnxruntime-web {ort.version} (https://www.npmjs.com/package/onnxruntime-web), "
        "Copyright (c) Microsoft Corporation, MIT licence.\n"
        "ort.wasm.min.js is the package's dist/ort.wasm.min.js; ort-glue.js holds "
        "dist/ort-wasm-simd-threaded.mjs as a string and ort-wasm.js "
        "dist/ort-wasm-simd-threaded.wasm in base64.\n"
    )


def write_bundle_js(folder: Path, bundle: dict) -> None:
    """``folder/bundle.js``: ``bundle`` as ``window.SEGCLI_BUNDLE`` (the page's preprocessing,
    classes, colours and parity)."""
    (folder / "bundle.js").write_text(f"window.SEGCLI_BUNDLE = {json.dumps(bundle, indent=1)};\n")


class BrowserModel:
    """The exported page in headless Chromium as a model for ``parity.check_parity``: a call maps
    ``(1, 3, H, W) float32`` normalised inputs back to their uint8 RGB pixels (``mean``/``std``:
    the bundle's normalisation, per channel in 0..1 units), lets the page preprocess and run them,
    and returns its ``(1, C, H, W) float32`` logits; ``fixed``: the bundle has a fixed size (the
    inputs' trailing zeros are that padding, which the page adds itself). Use as a context manager
    (it owns the browser). ``seconds``: the page's own time (preprocessing, onnxruntime-web,
    argmax) of every call.

    Raises:
        SegcliError: the browser did not start or the page did not load its model (its message).
    """

    def __init__(
        self, page: Path, browser: str, mean, std, fixed: bool = False, timeout_s: float = 300.0
    ) -> None:
        self.path, self.fixed = Path(page), fixed
        self.browser, self.timeout_ms = browser, timeout_s * 1000
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.seconds: list[float] = []

    def __enter__(self) -> BrowserModel:  # noqa: PYI034 - Self needs Python 3.11
        from playwright.sync_api import Error, sync_playwright

        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=self.browser, args=["--no-sandbox", "--disable-gpu"]
            )
            self.page = self._browser.new_page()
            self.page.set_default_timeout(self.timeout_ms)
            self.page.goto(self.path.resolve().as_uri())
            self.page.evaluate("() => window.segcli.ready")
        except Error as e:
            self.__exit__(None, None, None)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SegcliError(f"{self.path}: the page did not load in {self.browser}: {first}")
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "_browser", None) is not None:
            self._browser.close()
        self._pw.stop()

    def pixels(self, x: torch.Tensor) -> np.ndarray:
        """``(1, 3, H, W) float32`` normalised -> ``(H, W, 3) uint8`` RGB (rounded)."""
        rgb = ((x * self.std + self.mean) * 255).round().clamp(0, 255)
        return rgb[0].permute(1, 2, 0).to(torch.uint8).numpy()

    def run(self, rgb: np.ndarray, logits: bool = True, full: bool = False) -> dict:
        """The page on ``rgb`` (``(h, w, 3) uint8``): ``mask`` ``(h, w) uint8``, ``logits``
        ``(C, h, w) float32`` (with ``full``, the model's whole padded output ``(C, H, W)``; None
        without ``logits``), ``seconds`` (the page's clock: preprocessing, run, argmax).

        Raises:
            SegcliError: the page raised or timed out (its first line)."""
        from playwright.sync_api import Error

        h, w = rgb.shape[:2]
        try:
            out = self.page.evaluate(
                "([b, w, h, l, f]) => window.segcli.predictBase64(b, w, h, l, f)",
                [
                    base64.b64encode(np.ascontiguousarray(rgb).tobytes()).decode(),
                    w,
                    h,
                    logits,
                    full,
                ],
            )
        except Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SegcliError(f"{self.path}: the page failed on a {w}x{h} image: {first}") from None
        self.seconds.append(float(out["seconds"]))
        mask = np.frombuffer(base64.b64decode(out["mask"]), np.uint8).reshape(h, w)
        scores = None
        if out["logits"] is not None:
            shape = out["dims"] if full else (h, w)
            scores = np.frombuffer(base64.b64decode(out["logits"]), np.float32).reshape(-1, *shape)
        return {"mask": mask, "logits": scores, "seconds": float(out["seconds"])}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # a fixed-size parity input is the image (black-padded to a multiple of 32) then zeros to
        # the fixed size: the page gets the image without the zeros, pads them itself, and hands
        # back the whole padded output (were the image's own last rows zeros once normalised, the
        # page's black padding would be those same zeros)
        h, w = _extent(x) if self.fixed else x.shape[-2:]
        scores = self.run(self.pixels(x[..., :h, :w]), full=True)["logits"]
        return torch.from_numpy(scores.copy()).unsqueeze(0)

    def images_per_second(self, inputs) -> float:
        """Throughput of the page (its own clock: preprocessing + run, no transfer to Python),
        in images/s, over ``inputs`` after one warm-up image."""
        rgbs = [self.pixels(x) for x in inputs]
        self.run(rgbs[0], logits=False)
        start = len(self.seconds)
        for rgb in rgbs:
            self.run(rgb, logits=False)
        return len(rgbs) / max(sum(self.seconds[start:]), 1e-9)


def _base64(rgb: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(rgb).tobytes()).decode()


def _extent(x: torch.Tensor) -> tuple[int, int]:
    """Rows and columns of ``x: (1, 3, H, W)`` before its trailing all-zero ones."""
    rows = torch.nonzero(x[0].abs().sum((0, 2)) > 0)
    cols = torch.nonzero(x[0].abs().sum((0, 1)) > 0)
    return (int(rows.max()) + 1 if len(rows) else 1), (int(cols.max()) + 1 if len(cols) else 1)
