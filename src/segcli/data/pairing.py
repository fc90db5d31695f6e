"""Which image goes with which mask, by name: listing a folder's images (``list_images``), pairing
two folders by name less a suffix (``pair_files``), and split list files (``read_list``,
``pairs_from_list``: VOC's ImageSets style). The layouts of data/layouts.py are made of these.

A file's name is its path relative to its folder, without extension and without the folder's
suffix (``NAME.jpg`` <-> ``NAME_mask.png``: mask suffix ``_mask``). Files without a partner are
one-line ``SegcliError``s naming the file, or, given a ``problems`` list
(``dataset.on_bad_file=skip``, ``segcli data check``), described there and left out.
"""

from __future__ import annotations

from pathlib import Path

from segcli.data.images import IMAGE_EXTENSIONS
from segcli.errors import SegcliError


def list_images(folder: Path, suffix: str = "", recursive: bool = False) -> dict[str, Path]:
    """Image files in ``folder`` (and its subfolders with ``recursive``) by name, sorted: the
    path relative to ``folder`` without extension and without ``suffix``; files whose stem does
    not end with ``suffix`` are left out."""
    files = folder.rglob("*") if recursive else folder.iterdir()
    out = {}
    for p in sorted(files):
        if not (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.stem.endswith(suffix)):
            continue
        name = p.relative_to(folder).with_suffix("").as_posix()
        out[name[: len(name) - len(suffix)] if suffix else name] = p
    return out


def pair_files(
    image_dir: Path,
    mask_dir: Path,
    problems: list[str] | None = None,
    image_suffix: str = "",
    mask_suffix: str = "",
    recursive: bool = False,
) -> list[tuple[Path, Path]]:
    """Pair ``image_dir/NAME<image_suffix>.*`` with ``mask_dir/NAME<mask_suffix>.*``.

    Args:
        problems: when given, a file without a partner is described here and left out
            instead of raising (``dataset.on_bad_file=skip``, ``segcli data check``).

    Raises:
        SegcliError: a folder is missing or holds no images, or (without ``problems``) a file
            has no partner.
    """
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise SegcliError(f"{folder}: data folder not found")
    images = list_images(image_dir, image_suffix, recursive)
    masks = list_images(mask_dir, mask_suffix, recursive)
    if not images:
        what = f"names ending in {image_suffix!r}, " if image_suffix else ""
        raise SegcliError(
            f"{image_dir}: no image files ({what}{', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    unpaired = [
        f"{images[n]}: image has no mask {mask_dir}/{n}{mask_suffix}.*"
        for n in images
        if n not in masks
    ]
    unpaired += [
        f"{masks[n]}: mask has no image {image_dir}/{n}{image_suffix}.*"
        for n in masks
        if n not in images
    ]
    if unpaired and problems is None:
        raise SegcliError(unpaired[0] + _suffix_hint(images, masks, image_suffix, mask_suffix))
    if problems is not None:
        problems.extend(unpaired)
    return [(images[n], masks[n]) for n in images if n in masks]


def _suffix_hint(images: dict, masks: dict, image_suffix: str, mask_suffix: str) -> str:
    """When no name pairs at all, say which suffix setting would pair them."""
    if set(images) & set(masks) or not masks:
        return ""
    ends = {n.rsplit("_", 1)[-1] for n in masks if "_" in n}
    if len(ends) == 1 and not mask_suffix and all("_" in n for n in masks):
        end = ends.pop()
        return f" (no name pairs at all; masks named NAME_{end}? set dataset.mask_suffix=_{end})"
    return " (no name pairs at all; see dataset.image_suffix and dataset.mask_suffix)"


def read_list(path: Path, root: Path) -> list[tuple[str, ...]]:
    """A split list: one ``NAME`` or ``IMAGE MASK`` (paths relative to ``root``; a leading ``/``
    is relative to root too, as in SBD's ``train_aug.txt``) per line; blank lines and ``#``
    comments skipped.

    Raises:
        SegcliError: the file is missing, or a line has more than two fields.
    """
    if not path.is_file():
        raise SegcliError(f"{path}: split list not found")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise SegcliError(
                f"{path}:{number}: expected NAME or 'IMAGE MASK', got {len(fields)} fields"
            )
        out.append(tuple(f.lstrip("/") for f in fields))
    return out


def pairs_from_list(
    entries: list[tuple[str, ...]],
    by_name: dict[str, tuple[Path, Path]] | None,
    root: Path,
    source: Path,
    problems: list[str] | None,
) -> list[tuple[Path, Path]]:
    """The pairs a split list names: a ``NAME`` looked up in ``by_name``, an ``IMAGE MASK`` line
    as paths.

    Raises:
        SegcliError: (without ``problems``) a name with no pair, or a listed file that does not
            exist.
    """
    out, missing = [], []
    for entry in entries:
        if len(entry) == 2:
            image, mask = root / entry[0], root / entry[1]
            bad = next((p for p in (image, mask) if not p.is_file()), None)
            (
                missing.append(f"{bad}: listed in {source} but not found")
                if bad
                else out.append((image, mask))
            )
        elif by_name is not None and entry[0] in by_name:
            out.append(by_name[entry[0]])
        else:
            missing.append(f"{source}: {entry[0]} has no image/mask pair")
    if missing and problems is None:
        raise SegcliError(missing[0])
    if problems is not None:
        problems.extend(missing)
    return out
