// segcli's web page (segcli export --format web): the bundle's ONNX model on onnxruntime-web
// (WebAssembly, one thread: a page from file:// or a plain static server is not cross-origin
// isolated, so no SharedArrayBuffer), with `segcli predict`'s preprocessing: RGB pixels ->
// (pixel / 255 - mean) / std per channel, padded bottom/right with black pixels (0, before
// normalising) to a multiple of the stride (or to the bundle's fixed size), the logits cropped
// back, argmax over the classes. The model, the WebAssembly binary and its loader are embedded as
// JavaScript strings (model.js, ort/*.js) because a page opened from file:// may not fetch() its
// neighbours; the loader goes in as a blob: URL.
//
// window.segcli.predict(rgba, width, height, {logits, full}) -> Promise<{mask, logits, dims,
//   seconds}>: rgba: Uint8ClampedArray (height * width * 4), mask: Uint8Array (height * width)
//   class indices, logits (only when asked): Float32Array (C * height * width; with full, the
//   model's whole padded output, C * dims[0] * dims[1]), seconds: preprocessing, run and argmax.
(function () {
  'use strict';
  const B = window.SEGCLI_BUNDLE;
  const W = B.web;
  const C = B.num_classes;
  const mean = B.input.normalization.mean;
  const std = B.input.normalization.std;
  let ready = null;

  function bytes(b64) {
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  function toBase64(u8) {
    let s = '';
    for (let i = 0; i < u8.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  function session() {
    if (ready === null) {
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.wasmBinary = bytes(window.SEGCLI_ORT_WASM).buffer;
      const glue = new Blob([window.SEGCLI_ORT_GLUE], { type: 'text/javascript' });
      ort.env.wasm.wasmPaths = { mjs: URL.createObjectURL(glue) };
      ready = ort.InferenceSession.create(bytes(window.SEGCLI_MODEL), {
        executionProviders: ['wasm'],
      });
    }
    return ready;
  }

  // (height, width) padded to a multiple of the stride, and the size the model runs at: that,
  // or the bundle's fixed size (segcli predict pads the normalised input to it with zeros)
  function inputSize(h, w) {
    const s = W.size_divisor;
    const padded = [Math.ceil(h / s) * s, Math.ceil(w / s) * s];
    const fixed = B.input.fixed_size;
    if (fixed && (padded[0] > fixed[0] || padded[1] > fixed[1])) {
      throw new Error(`the image is ${w}x${h} pixels; this model takes at most ` +
        `${fixed[1]}x${fixed[0]} (exported with --size ${fixed[0]}x${fixed[1]})`);
    }
    return [padded, fixed || padded];
  }

  // RGBA pixels -> (1, 3, H, W) float32 input: normalised, padded bottom/right with black
  // pixels to a multiple of the stride, then with zeros to a fixed size
  function toInput(rgba, w, h) {
    const [[Hs, Ws], [H, Wd]] = inputSize(h, w);
    const x = new Float32Array(3 * H * Wd);
    for (let c = 0; c < 3; c++) {
      const base = c * H * Wd;
      const black = (0 - mean[c]) / std[c];
      for (let y = 0; y < Hs; y++) {
        const row = base + y * Wd;
        x.fill(black, row, row + Ws);
        if (y >= h) continue;
        for (let i = 0; i < w; i++) {
          x[row + i] = (rgba[(y * w + i) * 4 + c] / 255 - mean[c]) / std[c];
        }
      }
    }
    return new ort.Tensor('float32', x, [1, 3, H, Wd]);
  }

  async function predict(rgba, w, h, opts) {
    const s = await session();
    const start = performance.now();
    const input = toInput(rgba, w, h);
    const [H, Wd] = input.dims.slice(2);
    const out = (await s.run({ [W.input_name]: input }))[W.output_name].data;
    const plane = H * Wd;
    const mask = new Uint8Array(h * w);
    const full = opts && opts.logits && opts.full;
    const logits = opts && opts.logits && !full ? new Float32Array(C * h * w) : null;
    for (let y = 0; y < h; y++) {
      for (let i = 0; i < w; i++) {
        const p = y * Wd + i;
        let best = 0;
        let top = out[p];
        for (let c = 1; c < C; c++) {
          const v = out[c * plane + p];
          if (v > top) { top = v; best = c; }
        }
        mask[y * w + i] = best;
        if (logits) {
          for (let c = 0; c < C; c++) logits[c * h * w + y * w + i] = out[c * plane + p];
        }
      }
    }
    return {
      mask,
      logits: full ? new Float32Array(out) : logits,
      dims: [H, Wd],
      seconds: (performance.now() - start) / 1000,
    };
  }

  // for segcli's own check (inference/web_page.py): base64 RGB in, base64 mask/logits out
  async function predictBase64(rgb64, w, h, withLogits, full) {
    const rgb = bytes(rgb64);
    const rgba = new Uint8ClampedArray(w * h * 4);
    for (let i = 0; i < w * h; i++) {
      rgba[i * 4] = rgb[i * 3];
      rgba[i * 4 + 1] = rgb[i * 3 + 1];
      rgba[i * 4 + 2] = rgb[i * 3 + 2];
      rgba[i * 4 + 3] = 255;
    }
    const r = await predict(rgba, w, h, { logits: withLogits, full });
    return {
      mask: toBase64(r.mask),
      logits: r.logits ? toBase64(new Uint8Array(r.logits.buffer)) : null,
      dims: r.dims,
      seconds: r.seconds,
    };
  }

  // --- the page ---
  const $ = (id) => document.getElementById(id);

  function status(text, error) {
    $('status').textContent = text;
    $('status').className = error ? 'error' : '';
  }

  function draw(canvas, pixels, w, h) {
    canvas.width = w;
    canvas.height = h;
    canvas.getContext('2d').putImageData(new ImageData(pixels, w, h), 0, 0);
  }

  function show(rgba, w, h, mask, seconds, name) {
    const colored = new Uint8ClampedArray(w * h * 4);
    const blended = new Uint8ClampedArray(w * h * 4);
    const counts = new Array(C).fill(0);
    for (let p = 0; p < w * h; p++) {
      const k = mask[p];
      counts[k]++;
      const col = B.colors[Math.min(k, B.colors.length - 1)];
      for (let c = 0; c < 3; c++) {
        colored[p * 4 + c] = col[c];
        // segcli predict's overlay: image * 0.5 + colour * 0.5 (cv2.addWeighted, rounded)
        blended[p * 4 + c] = Math.round(rgba[p * 4 + c] * 0.5 + col[c] * 0.5);
      }
      colored[p * 4 + 3] = 255;
      blended[p * 4 + 3] = 255;
    }
    draw($('mask'), colored, w, h);
    draw($('overlay'), blended, w, h);
    $('download').href = $('mask').toDataURL('image/png');
    $('download').hidden = false;
    const body = $('shares').querySelector('tbody');
    body.innerHTML = '';
    counts.forEach((n, k) => {
      if (!n) return;
      const tr = document.createElement('tr');
      const col = B.colors[Math.min(k, B.colors.length - 1)];
      tr.innerHTML = `<td><span class="swatch" style="background:rgb(${col.join(',')})"></span> ` +
        `${B.class_names[k]}</td><td class="share">${n}</td>` +
        `<td class="share">${(100 * n / (w * h)).toFixed(2)}%</td>`;
      body.appendChild(tr);
    });
    $('shares').hidden = false;
    status(`${name}: ${w}x${h} pixels in ${seconds.toFixed(2)} s`);
    window.segcli.last = { name, width: w, height: h, mask, counts, seconds };
  }

  async function open(file) {
    try {
      status(`running on ${file.name}…`);
      // no colour management, no EXIF rotation: the pixels segcli predict reads (OpenCV,
      // IMREAD_IGNORE_ORIENTATION); a canvas keeps premultiplied alpha, so fully transparent
      // pixels of a PNG read as black here (segcli predict keeps their stored colour)
      const bitmap = await createImageBitmap(file, {
        colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'none',
      });
      const w = bitmap.width;
      const h = bitmap.height;
      const canvas = $('input');
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(bitmap, 0, 0);
      const rgba = ctx.getImageData(0, 0, w, h).data;
      const r = await predict(rgba, w, h, {});
      show(rgba, w, h, r.mask, r.seconds, file.name);
    } catch (e) {
      status(`${file.name}: ${e.message || e}`, true);
      window.segcli.error = String(e.message || e);
    }
  }

  window.segcli = { predict, predictBase64, ready: null, last: null, error: null };
  document.addEventListener('DOMContentLoaded', () => {
    $('title').textContent = `segcli: ${B.architecture}`;
    const p = (B.parity || []).find((q) => q.model === 'index.html');
    $('meta').textContent = `${C} classes (${B.class_names.join(', ')}); input ` +
      `${B.input.size}; onnxruntime-web ${W.onnxruntime_web}` +
      (p ? `. Checked at export against the checkpoint on ${p.images} images (${p.source}): ` +
        `${(100 * p.agreement).toFixed(4)}% of the pixels agree` : '');
    $('image').addEventListener('change', (e) => e.target.files[0] && open(e.target.files[0]));
    const drop = $('drop');
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('over');
      if (e.dataTransfer.files[0]) open(e.dataTransfer.files[0]);
    });
  });
  window.segcli.ready = session().then(
    () => status('ready: open an image'),
    (e) => { status(`the model did not load: ${e.message || e}`, true); throw e; },
  );
})();
