"""Reading images, region masks and mask files (upright, checked); the mask formats that decode them into
(H, W) uint8 class maps are in data/mask_formats/."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, brief

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


# Values that mark pixels without data in rasters (GDAL / QGIS / ArcGIS defaults: -9999, int16's minimum,
# the most negative float32); NaN in float files. `seglab init` writes one it finds as data.nodata.
NODATA_MARKERS = (-9999.0, -32768.0, -32767.0, float(np.finfo(np.float32).min), -1e10)

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


def missing_pixels(arr: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    """(H, W) bool: the pixels of a stored (H, W) / (H, W, C) array holding `nodata` in any band (NaN: NaN
    values of a float array); none when `nodata` is None."""
    if nodata is None:
        return np.zeros(arr.shape[:2], bool)
    hits = np.isnan(arr) if math.isnan(nodata) and arr.dtype.kind == "f" else arr == nodata
    return hits.any(-1) if hits.ndim == 3 else hits


def scale_image(arr: np.ndarray, image_max: float | None, where: str, fix: str,
                nodata: float | None = None) -> np.ndarray:
    """Pixel values as a model reads them, the one rule for files and arrays: uint8 kept (0..255); other integers
    (16-bit, 32-bit grey) -> float32 / 65535 and floats -> float32 / 1, unless `image_max` (data.image_max) is
    set, which divides both. Non-finite values are refused (`fix` says how, for `where`). `nodata`
    (data.nodata, a stored value; NaN for float files that mark gaps so): a pixel holding it in any band is
    missing, NaN in every band of the float32 result (uint8 images with one become float32 / 255);
    `transforms.to_tensor` gives it the band's mean, and datasets do not train on or score it."""
    missing = missing_pixels(arr, nodata) if nodata is not None else None
    if arr.dtype.kind == "f":
        not_finite = ~np.isfinite(arr)
        if nodata is not None and math.isnan(nodata):  # NaN marks missing pixels: only infinities are wrong
            not_finite &= ~np.isnan(arr)
        bad = int(not_finite.sum())
        if bad:
            raise DataError(f"{where}: {bad:,} of {arr.size:,} values are NaN or infinite; {fix}")
    if missing is None or not missing.any():
        if arr.dtype == np.uint8:
            return arr
        missing = None
    top = 255.0 if arr.dtype == np.uint8 else image_max if image_max is not None else (
        65535.0 if arr.dtype.kind in "iu" else 1.0)
    out = arr.astype(np.float32) / np.float32(top)
    if missing is not None:
        out[missing] = np.nan
    return out


def read_image(path: Path, channels: int = 3, image_max: float | None = None,
               kinds: Counter | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               peaks: dict[str, int] | None = None, nodata: float | None = None,
               lows: dict[str, float] | None = None) -> np.ndarray:
    """Read an image file as (H, W, C) with C = `channels`: uint8 for 8-bit files; float32 for 16-bit and
    float files, divided by `image_max` (default 65535 for 16-bit and other integer files, 1 for floats),
    one scale for the whole dataset so absolute intensity survives. TIFFs of any band count go through tifffile.
    Grey, RGBA, palette and CMYK files become RGB (and RGB grey for 1 channel); `kinds` counts the kinds read,
    `peaks` keeps each integer kind's largest raw value above 8 bits (8-bit data in 16-bit files shows there).
    `nodata`: data.nodata, see `scale_image`; `lows` keeps each non-8-bit kind's smallest raw value (a nodata
    marker shows there).
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        arr, kind = _read_tiff(path, max_pixels)
    else:
        arr, kind = _read_pil(path, channels, max_pixels)
    if kinds is not None:
        kinds[kind] += 1
    if peaks is not None and arr.dtype.kind in "iu" and arr.dtype.itemsize > 1:
        peaks[kind] = max(peaks.get(kind, 0), int(arr.max(initial=0)))
    if lows is not None and arr.dtype != np.uint8 and arr.size and arr.dtype.kind in "iuf":
        low = float(np.nanmin(arr)) if not np.isnan(arr).all() else float("nan")
        lows[kind] = min(lows.get(kind, low), low)
    arr = scale_image(arr, image_max, str(path), "replace them in the file (e.g. with 0 or the band's minimum), set "
                      "data.nodata: .nan if NaN marks missing pixels, or leave the image out", nodata)
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
    if img.dtype != np.uint8:  # missing pixels (data.nodata, NaN) are drawn black
        img = (np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
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


# binary masks' threshold when data.binary_threshold is not set (8-bit masks; see mask_formats/binary.foreground)
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
