"""Reading images and decoding index, binary and RGB-palette masks into (H, W) uint8 class maps."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, brief
from .labels import LabelSpace
from .multilabel import pack_masks

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


# Images above this many pixels are refused (a decompression bomb, or a file far larger than any
# training image); data.max_image_pixels sets it per dataset.
DEFAULT_MAX_IMAGE_PIXELS = 200_000_000


def _open(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # PIL's own guard is replaced by the size check below
        im = Image.open(path)
        w, h = im.size
        if w * h > max_pixels:
            raise DataError(f"{path}: {w}x{h} = {w * h:,} pixels, above data.max_image_pixels ({max_pixels:,}); "
                            "raise it if the file is genuine")
        raw = str(im.tile[0][3]) if im.tile else ""  # the file's pixel layout, e.g. "RGB;16B"
        im.load()  # decode now so truncated files fail here, not later
        orientation = _exif_orientation(im)
        if orientation not in (0, 1):  # a phone's rotation tag: turned upright, as viewers and annotation tools do
            from PIL import ImageOps

            fmt, im = im.format, ImageOps.exif_transpose(im)
            im.format = fmt  # the turned copy has none; the 16-bit PNG path asks for it
        im.info["seglab_rawmode"] = raw
        im.info["seglab_orientation"] = orientation
        return im
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (corrupt or unknown format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({brief(exc)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 0 when absent or unreadable)."""
    try:
        value = im.getexif().get(0x0112, 0)
        return int(value) if int(value) in range(9) else 0
    except Exception:  # a broken EXIF block is not a reason to refuse the pixels
        return 0


def read_image(path: Path, channels: int = 3, image_max: float | None = None,
               kinds: Counter | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               peaks: dict[str, int] | None = None) -> np.ndarray:
    """Read an image file as (H, W, C) with C = `channels`: uint8 for 8-bit files; float32 for 16-bit and
    float files, divided by `image_max` (default 65535 for 16-bit and other integer files, 1 for floats),
    one scale for the whole dataset so absolute intensity survives. TIFFs of any band count go through tifffile.
    Grey, RGBA, palette and CMYK files become RGB (and RGB grey for 1 channel); `kinds` counts the kinds read,
    `peaks` keeps each integer kind's largest raw value above 8 bits (8-bit data in 16-bit files shows there).
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        arr, kind = _read_tiff(path, max_pixels)
    else:
        arr, kind = _read_pil(path, channels, max_pixels)
    if kinds is not None:
        kinds[kind] += 1
    if arr.dtype.kind == "f":
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise DataError(f"{path}: {bad:,} of {arr.size:,} values are NaN or infinite; replace them in the file "
                            "(e.g. with 0 or the band's minimum) or leave the image out")
    if peaks is not None and arr.dtype.kind in "iu" and arr.dtype.itemsize > 1:
        peaks[kind] = max(peaks.get(kind, 0), int(arr.max(initial=0)))
    if arr.dtype != np.uint8:  # 16-bit (or 32-bit integer grey) -> / 65535, float -> / 1, unless image_max
        top = image_max if image_max is not None else (65535.0 if arr.dtype.kind in "iu" else 1.0)
        arr = arr.astype(np.float32) / np.float32(top)
    arr = arr[..., None] if arr.ndim == 2 else arr
    have = arr.shape[-1]
    if have == channels:
        return arr
    if channels == 3 and have in (1, 2):  # grey (+ alpha)
        return np.repeat(arr[..., :1], 3, axis=-1)
    if channels == 3 and have == 4:  # RGBA: alpha dropped
        return arr[..., :3]
    if channels == 1 and have in (3, 4):  # luminance, as PIL's "L"
        grey = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        return (np.round(grey).astype(np.uint8) if arr.dtype == np.uint8 else grey.astype(np.float32))[..., None]
    raise DataError(f"{path}: {have} channels, but data.in_channels is {channels}; set data.in_channels: {have}")


def _read_pil(path: Path, channels: int, max_pixels: int) -> tuple[np.ndarray, str]:
    im = _open(path, max_pixels)
    kind = im.mode + (" turned upright by EXIF" if im.info["seglab_orientation"] > 1 else "")
    if im.format == "PNG" and (";16" in im.info["seglab_rawmode"] or im.mode.startswith("I;16")):
        arr = orient(_read_png16(path), im.info["seglab_orientation"])
        return arr, f"{'grey' if arr.ndim == 2 else kind} 16-bit"
    if im.mode in ("I", "F"):
        return np.asarray(im), kind
    if channels in (1, 3, 4):
        im = im.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
    return np.asarray(im), kind


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, ...) pixels as stored -> upright for an EXIF orientation 1-8 (what Pillow's exif_transpose does),
    for the files OpenCV reads (16-bit PNGs), which ignores the tag."""
    if orientation in (0, 1):
        return arr
    if orientation in (5, 7):  # a mirror about a diagonal, then a turn
        arr = np.swapaxes(arr, 0, 1)
        return np.ascontiguousarray(arr if orientation == 5 else arr[::-1, ::-1])
    turns = {3: 2, 6: 3, 8: 1}.get(orientation)
    if turns is not None:
        return np.ascontiguousarray(np.rot90(arr, turns))
    return np.ascontiguousarray(arr[:, ::-1] if orientation == 2 else arr[::-1])


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG in the file's channel order (Pillow keeps only the high bytes of 16-bit RGB PNGs: OpenCV
    reads every bit, in BGR(A) order, turned back to RGB(A))."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DataError(f"{path}: cannot decode image (16-bit PNG)")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[-1] == 4 else cv2.COLOR_BGR2RGB)
    return arr


def _read_tiff(path: Path, max_pixels: int) -> tuple[np.ndarray, str]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            pixels = int(np.prod([n for n, a in zip(series.shape, series.axes) if a in "YX"]))
            if pixels > max_pixels:
                raise DataError(f"{path}: {pixels:,} pixels, above data.max_image_pixels ({max_pixels:,}); "
                                "raise it if the file is genuine")
            arr, axes = series.asarray(), series.axes
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except DataError:
        raise
    except Exception as exc:  # tifffile raises many kinds for broken files
        if "imagecodecs" in str(exc):
            return _read_tiff_pillow(path, max_pixels, exc)
        raise DataError(f"{path}: cannot decode TIFF ({brief(exc, 100)})") from None
    axes = axes.replace("Q", "S")
    if arr.ndim == 3 and axes[0] in "SC" and axes[1:] == "YX":  # band-first (planar) -> band-last
        arr = np.moveaxis(arr, 0, -1)
    elif arr.ndim > 3 or (arr.ndim == 3 and axes[-1] not in "SC"):
        raise DataError(f"{path}: TIFF of shape {arr.shape} (axes {axes}): expected one image, Y X with bands")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    return arr, _tiff_kind(arr)


def _tiff_kind(arr: np.ndarray) -> str:
    """What `read_image` counts a TIFF as, e.g. 'TIFF uint16 5 bands'."""
    bands = 1 if arr.ndim == 2 else arr.shape[-1]
    return f"TIFF {arr.dtype} {bands} band{'s' if bands > 1 else ''}"


def _read_tiff_pillow(path: Path, max_pixels: int, exc: Exception) -> tuple[np.ndarray, str]:
    """A compressed TIFF without the imagecodecs package (a broken install): Pillow's libtiff reads the usual
    grey / RGB / 16-bit ones; anything else is refused naming the package."""
    try:
        arr = np.asarray(_open(path, max_pixels))
    except DataError:
        raise DataError(f"{path}: compressed TIFF ({brief(exc, 80)}); install it: pip install imagecodecs") from None
    return arr, _tiff_kind(arr)


def display_rgb(image: np.ndarray) -> np.ndarray:
    """Any (H, W, C) image as read by read_image -> (H, W, 3) uint8 for pictures (first three bands)."""
    img = image if image.ndim == 3 else image[..., None]
    if img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(img[..., :1], 3, axis=-1) if img.shape[-1] < 3 else np.ascontiguousarray(img[..., :3])


def read_region(path: Path, marks: str = "valid", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A region mask file -> (H, W) bool, True where pixels are scored. Its non-zero pixels (any channel;
    0/1, 0/255, 1-bit, 16-bit or JPEG-soft) are the field of view (`marks` 'valid') or the pixels to
    ignore ('ignore'). Values that are neither near 0 nor near the top of the file's range are refused."""
    im = _open(path, max_pixels)
    if im.mode == "1":
        values = np.asarray(im).astype(np.uint8)
    elif im.mode in ("L", "I;16", "I;16B", "I;16L", "I", "P") and (im.mode != "P" or np.asarray(im).max(initial=0) <= 1):
        values = np.asarray(im)
    else:
        values = np.asarray(im.convert("RGB")).max(axis=-1)
    top = int(values.max(initial=0))
    if top <= 1:
        inside = values > 0
    else:
        full = 255 if values.dtype == np.uint8 else 65535
        if top <= full // 2:
            raise DataError(f"{path}: region mask's largest value is {top}, expected 0 and {full} (or 0 and 1); "
                            "a region mask marks each pixel as in (non-zero) or out (0)")
        inside = values > full // 2
    return inside if marks == "valid" else ~inside


# binary masks' threshold when data.binary_threshold is not set (8-bit masks; see MaskDecoder._foreground)
DEFAULT_BINARY_THRESHOLD = 127
# values at or above this that fill flat 3x3 patches below the threshold are labels, not JPEG or resizing noise
DIM_LABEL_MIN = 8
DIM_LABEL_MIN_PIXELS = 16


def _refuse_dim_foreground(values: np.ndarray, threshold: int, path: Path, where: str) -> None:
    """Refuse an 8-bit mask whose non-zero values below `threshold` fill flat regions (PanNuke-style masks whose
    values 16..255 encode a type or an instance): the default threshold would read those objects as background.
    JPEG and anti-aliasing noise lies on edges, in gradients, so it leaves few flat 3x3 patches."""
    dim = (values >= DIM_LABEL_MIN) & (values <= threshold)
    if int(dim.sum()) < DIM_LABEL_MIN_PIXELS or not (values == 0).any():  # no background: not objects on 0
        return
    v = np.ascontiguousarray(values, dtype=np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    flat = (cv2.erode(v, kernel) == v) & (cv2.dilate(v, kernel) == v) & dim
    if int(flat.sum()) < DIM_LABEL_MIN_PIXELS:
        return
    dropped = int(((values > 0) & (values <= threshold)).sum())
    levels = np.unique(values[flat])
    raise DataError(f"{path}: {dropped:,} non-zero {where} pixels are at or below the default binary threshold "
                    f"{threshold} (flat regions of {len(levels)} value{'s' if len(levels) > 1 else ''} from "
                    f"{int(levels[0])} to {int(levels[-1])}, not edge noise) and would be read as background: "
                    "set data.binary_threshold: 0 to read every non-zero pixel as foreground, or set the threshold "
                    "you mean")


class MaskDecoder:
    """Decode one mask file to an (H, W) uint8 map of class indices and `ignore_index`.

    encoding: 'index' (8/16-bit values, or 1-bit pixels, are class ids), 'binary' (foreground where any
    channel is above `threshold`; soft JPEG edges allowed; {0,1} masks read as they are), 'rgb'
    (colours looked up in the label space's palette), or for overlapping classes 'channels' (channel k of a
    PNG / TIFF is class k's binary mask) and 'class_folders' (a binary mask per class folder), both packed one
    bit per class (data/multilabel.py).
    remap: raw index -> class index or ignore (e.g. CamVid's 11 = Void -> 255).
    unknown_colors: what an rgb mask's colour outside the palette becomes: 'error', 'nearest' (the
    nearest palette colour within `tolerance`, RGB distance) or 'ignore'.
    `changed` counts, per rule, the pixels a fallback rule decoded (what `seglab inspect` reports).
    """

    def __init__(self, encoding: str, labels: LabelSpace, remap: dict[int, int] | None = None, *,
                 threshold: int | None = None, invert: bool = False, unknown_colors: str = "error",
                 tolerance: float = 30.0, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 remap_source: str | None = None) -> None:
        self.encoding = encoding
        self.remap_source = remap_source  # where a complete remap comes from: values outside it are refused
        self.max_pixels = max_pixels
        self.labels = labels
        self.remap = dict(remap or {})
        self.threshold, self.invert = threshold, invert
        self.unknown_colors, self.tolerance = unknown_colors, tolerance
        self.changed: Counter[str] = Counter()
        if encoding == "rgb":
            colors = list(labels.palette) + list(labels.void_colors)
            values = list(range(labels.num_classes)) + [labels.ignore_index] * len(labels.void_colors)
            codes = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], np.int64)
            order = np.argsort(codes)
            self._codes = codes[order]
            self._values = np.array(values, np.uint8)[order]
            self._colors = np.array(colors, np.float64)[order]
            self._names = [(list(labels.names) + ["void"] * len(labels.void_colors))[i] for i in order]

    def __call__(self, path: Path) -> np.ndarray:
        if self.encoding == "channels":
            return self._decode_channels(path)
        if self.encoding == "class_folders":
            return self._decode_class_folders(path)
        im = _open(path, self.max_pixels)
        if im.info["seglab_orientation"] > 1:
            self.changed["mask pixels turned upright by their EXIF orientation"] += im.width * im.height
        if self.encoding == "binary":
            return self._decode_binary(im, path)
        if self.encoding == "rgb":
            return self._decode_rgb(np.asarray(im.convert("RGB")), path)
        return self._decode_index(im, path)

    def _decode_binary(self, im: Image.Image, path: Path) -> np.ndarray:
        if im.mode == "1":
            values = np.asarray(im).astype(np.uint8)
        elif im.mode in ("L", "I;16", "I;16B", "I;16L", "I"):
            values = np.asarray(im)
        elif im.mode == "P" and int(np.asarray(im).max(initial=0)) <= 1:
            values = np.asarray(im)  # palette indices 0/1: background/foreground whatever their colours
        else:
            rgb = np.asarray(im.convert("RGB"))  # RGBA, LA, P, CMYK...: the colours, without alpha
            values = rgb.max(axis=-1)  # any channel: a pure-blue (0, 0, 255) object is foreground
        return self._foreground(values, path).astype(np.uint8)

    def _foreground(self, values: np.ndarray, path: Path, where: str = "binary mask") -> np.ndarray:
        """One binary mask's (H, W) values -> bool foreground, by the threshold rules of data.binary_*.

        Without data.binary_threshold: {0,1} masks are read as they are, masks of more than 8 bits (16-bit
        instance ids, one per object) as foreground wherever non-zero, 8-bit masks above 127; an 8-bit mask
        whose foreground lies in flat regions below 127 (values that encode a type or an instance) is refused.
        """
        top = int(values.max(initial=0))
        if top == 1:
            # {0,1} masks: a threshold meant for 0/255 would read every one as all background
            fg = values == 1
            self.changed[f"foreground pixels of {where}s holding 0/1 (read as background/foreground)"] += int(fg.sum())
        elif self.threshold is None and values.dtype.itemsize > 1:
            # 16-bit and wider: object ids 1..N (nuclei, cells), or 0/65535; an 8-bit threshold would drop ids <= 127
            fg = values > 0
            if len(np.unique(values)) > 2:
                self.changed[f"foreground pixels of 16-bit {where}s holding instance ids (every non-zero id "
                             "read as foreground)"] += int(fg.sum())
        else:
            threshold = DEFAULT_BINARY_THRESHOLD if self.threshold is None else self.threshold
            if 1 < top <= threshold and len(np.unique(values)) == 2:
                raise DataError(f"{path}: {where} holds only 0 and {top}, and {top} is not above "
                                f"data.binary_threshold {threshold}: set data.binary_threshold below {top}")
            if self.threshold is None:
                _refuse_dim_foreground(values, threshold, path, where)
            fg = values > threshold
        return ~fg if self.invert else fg

    def _decode_channels(self, path: Path) -> np.ndarray:
        """A multi-channel PNG / TIFF, channel k = class k's binary mask -> packed (H, W) map."""
        if path.suffix.lower() in (".tif", ".tiff"):
            arr, _ = _read_tiff(path, self.max_pixels)
        else:
            im = _open(path, self.max_pixels)
            if im.mode == "P":
                raise DataError(f"{path}: a palette image holds one class per pixel, not one channel per class; "
                                "use data.mask_encoding: index (or rgb with a palette file)")
            if im.format == "PNG" and ";16" in im.info["seglab_rawmode"]:
                arr = orient(_read_png16(path), im.info["seglab_orientation"])
            else:
                arr = np.asarray(im.convert("L") if im.mode == "1" else im)
        arr = arr[..., None] if arr.ndim == 2 else arr
        k = self.labels.num_classes
        if arr.shape[-1] != k:
            raise DataError(f"{path}: {arr.shape[-1]} channel{'s' if arr.shape[-1] != 1 else ''}, but data.class_names "
                            f"names {k} classes; a channels mask holds one binary mask per class, in that order")
        return pack_masks(np.stack([self._foreground(arr[..., c], path, "mask channel") for c in range(k)]))

    def _decode_class_folders(self, path: Path) -> np.ndarray:
        """`path` is the image's mask in one class's folder; the same file name in every class folder beside
        it is that class's binary mask -> packed (H, W) map."""
        names = self.labels.names
        if path.parent.name not in names:
            raise DataError(f"{path}: with mask_encoding class_folders a mask lies in a folder named after its class "
                            f"({', '.join(names)}); found folder '{path.parent.name}'")
        masks = []
        for name in names:
            p = path.parent.parent / name / path.name
            if not p.is_file():
                raise DataError(f"{p}: not found; every class folder needs a mask for each image (an empty mask "
                                "where the class is absent)")
            fg = self._decode_binary(_open(p, self.max_pixels), p).astype(bool)
            if masks and fg.shape != masks[0].shape:
                raise DataError(f"{p}: {fg.shape[1]}x{fg.shape[0]}, but {path.parent.parent / names[0] / path.name} "
                                f"is {masks[0].shape[1]}x{masks[0].shape[0]}; an image's class masks share one size")
            masks.append(fg)
        return pack_masks(np.stack(masks))

    def _decode_index(self, im: Image.Image, path: Path) -> np.ndarray:
        if im.mode in ("RGB", "RGBA"):
            arr = np.asarray(im)
            if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                raise DataError(
                    f"{path}: colour mask, but data.mask_encoding is 'index' (use 'rgb' with a palette file)"
                )
            arr = arr[..., 0]
        elif im.mode == "1":
            arr = np.asarray(im).astype(np.uint8)  # 1-bit: True is class 1, not 255
        elif im.mode in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im)  # P gives palette indices, which are the class ids
        else:
            arr = np.asarray(im.convert("L"))
        arr = arr.astype(np.int64)
        n, ignore = self.labels.num_classes, self.labels.ignore_index
        if self.remap:
            lut_size = max(int(arr.max(initial=0)) + 1, max(self.remap) + 1, 256)
            # a complete map (data.label_map) marks the values it leaves out; otherwise they are ids as they are
            lut = np.full(lut_size, -1, np.int64) if self.remap_source else np.arange(lut_size, dtype=np.int64)
            if self.remap_source:
                lut[ignore] = ignore
            for raw, new in self.remap.items():
                lut[raw] = new
            raw_values, arr = arr, lut[arr]
            if self.remap_source and (arr < 0).any():
                values, counts = np.unique(raw_values[arr < 0], return_counts=True)
                listed = ", ".join(f"{v} ({c} px)" for v, c in zip(values[:5], counts[:5]))
                more = f" and {len(values) - 5} more" if len(values) > 5 else ""
                raise DataError(f"{path}: mask values {listed}{more} are not in {self.remap_source}; map each to a "
                                "class id, a class name or ignore")
        bad = (arr >= n) & (arr != ignore)
        if bad.any():
            values, counts = np.unique(arr[bad], return_counts=True)
            listed = ", ".join(f"{v} ({c} px)" for v, c in zip(values[:5], counts[:5]))
            raise DataError(
                f"{path}: mask values {listed} are not class ids 0..{n - 1} nor the ignore value {ignore}"
            )
        return arr.astype(np.uint8)

    def _decode_rgb(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        pos = np.searchsorted(self._codes, code).clip(0, len(self._codes) - 1)
        found = self._codes[pos] == code
        if found.all():
            return self._values[pos]
        values, inverse, counts = np.unique(code[~found], return_inverse=True, return_counts=True)
        colors = np.stack([(values >> 16) & 255, (values >> 8) & 255, values & 255], 1)
        if self.unknown_colors == "error":
            worst = int(np.argmax(counts))
            more = f" and {len(values) - 1} other colours" if len(values) > 1 else ""
            raise DataError(f"{path}: colour {tuple(int(v) for v in colors[worst])} ({counts[worst]} px){more} is "
                            "not in the palette (anti-aliased or JPEG masks: set data.unknown_colors to nearest "
                            "or ignore)")
        out = self._values[pos]
        if self.unknown_colors == "ignore":
            out[~found] = self.labels.ignore_index
            self.changed["colours outside the palette -> ignore"] += int(counts.sum())
            return out
        dist = np.linalg.norm(colors[:, None, :].astype(np.float64) - self._colors[None], axis=-1)  # (U, P)
        nearest, gap = dist.argmin(1), dist.min(1)
        far = gap > self.tolerance
        if far.any():
            k = int(np.argmax(np.where(far, counts, -1)))
            raise DataError(f"{path}: colour {tuple(int(v) for v in colors[k])} ({counts[k]} px) is {gap[k]:.0f} from "
                            f"the nearest palette colour ({self._names[nearest[k]]}), beyond data.color_tolerance "
                            f"{self.tolerance:g}: raise it, or set data.unknown_colors: ignore")
        out[~found] = self._values[nearest][inverse]
        self.changed["colours outside the palette -> nearest palette colour"] += int(counts.sum())
        return out
