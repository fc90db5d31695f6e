"""A per-file cache of the up-front pair check (``data.readers.check_pairs``), so that a second run
on unchanged data does not decode every image and mask again (about 5 ms a pair here: minutes for
100,000 pairs).

An entry is kept per (image, mask, region-of-interest) path triple with each file's size and
modification time (ns); any change to a file checks that pair again. The check's result also
depends on how masks are decoded (``MaskDecoder.fingerprint``), the number of classes and
``point_labels``: these name the cache file, so another mask setting starts its own cache.
Only good pairs are cached; bad ones are checked (and reported) every time.

Where: ``$SEGCLI_CACHE_DIR``, else ``$XDG_CACHE_HOME/segcli``, else ``~/.cache/segcli``;
``SEGCLI_CACHE_DIR=off`` turns it off. A cache that cannot be read is ignored; one that cannot
be written is skipped with no error (the check itself has run).

Written here: a few lines of JSON keyed by file stamps; diskcache or joblib.Memory would key on
arguments, not on the files' stamps, and bring a dependency for this.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from segcli.files import atomic_write

CACHE_VERSION = 1


def cache_dir() -> Path | None:
    """Where pair caches live (see the module docstring); None when turned off."""
    configured = os.environ.get("SEGCLI_CACHE_DIR")
    if configured is not None:
        return (
            None
            if configured.strip().lower() in ("", "off", "0", "none")
            else Path(configured).expanduser()
        )
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segcli"


def _stamp(paths: tuple[Path | None, ...]) -> list[int] | None:
    out = []
    for p in paths:
        if p is None:
            continue
        try:
            st = os.stat(p)
        except OSError:
            return None
        out += [st.st_size, st.st_mtime_ns]
    return out


class PairCache:
    """Cached ``(class pixel counts, ignored pixels, (height, width))`` of checked pairs.

    ``PairCache.open(root, fingerprint)`` (None when caching is off); ``get`` and ``put`` per
    pair (thread-safe), ``save()`` once at the end; ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, path: Path) -> None:
        self.path, self.entries, self.changed = path, {}, False
        self.hits = self.misses = 0
        self.lock = threading.Lock()
        try:
            data = json.loads(path.read_text())
            if data.get("version") == CACHE_VERSION:
                self.entries = data["entries"]
        except (OSError, ValueError, KeyError, TypeError):
            pass

    @classmethod
    def open(cls, root: str | Path, fingerprint: str) -> PairCache | None:
        """The cache of dataset ``root`` under the decoding ``fingerprint``, or None when off."""
        folder = cache_dir()
        if folder is None:
            return None
        name = hashlib.sha1(
            f"{Path(root).expanduser().resolve()}|{fingerprint}".encode()
        ).hexdigest()[:20]
        return cls(folder / f"pairs-{name}.json")

    @staticmethod
    def _key(image: Path, mask: Path, roi: Path | None, extras: tuple = ()) -> str:
        return "|".join([str(image), str(mask), str(roi or ""), *map(str, extras)])

    def get(
        self, image: Path, mask: Path, roi: Path | None = None, extras: tuple = ()
    ) -> tuple[list[int], int, tuple[int, int]] | None:
        """The cached result of this pair (with its ROI and extra input files) if no file
        changed since, else None."""
        entry = self.entries.get(self._key(image, mask, roi, extras))
        hit = entry is not None and entry["stamp"] == _stamp((image, mask, roi, *extras))
        with self.lock:
            self.hits += hit
            self.misses += not hit
        return (entry["counts"], entry["ignored"], tuple(entry["size"])) if hit else None

    def put(
        self,
        image: Path,
        mask: Path,
        roi: Path | None,
        counts,
        ignored: int,
        size: tuple[int, int],
        extras: tuple = (),
    ) -> None:
        """Remember a good pair's result with the files' current stamps."""
        stamp = _stamp((image, mask, roi, *extras))
        if stamp is None:
            return
        with self.lock:
            self.entries[self._key(image, mask, roi, extras)] = {
                "stamp": stamp,
                "counts": [int(c) for c in counts],
                "ignored": int(ignored),
                "size": list(size),
            }
            self.changed = True

    def save(self) -> None:
        """Write the cache if anything was added (atomically; silently skipped when not
        writable)."""
        if not self.changed:
            return
        text = json.dumps(
            {"version": CACHE_VERSION, "entries": self.entries}, separators=(",", ":")
        )
        try:
            atomic_write(self.path, lambda f: f.write(text.encode()))
        except OSError:
            pass
