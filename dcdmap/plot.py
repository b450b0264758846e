"""Bar charts as PNG files, with numpy and the standard library only.

``dcdmap compare`` needs one picture of several presentations measured on several metrics,
and dcdmap's only run-time dependency for numbers is numpy, so this module rasterises the
chart itself (array slices, a built-in 5x7 bitmap font) and writes the PNG with ``zlib``
and ``struct``.  It draws one kind of chart, *small multiples*: a title, then a grid of
panels, one per metric, each with one horizontal bar per label::

    >>> import os, tempfile
    >>> labels = ["hotplug", "virtio-mem", "type3"]
    >>> panels = [Panel("GPA wasted (MiB)", [512, 2, 0]),
    ...           Panel("run time (s)", [1.5, None, 0.25], ["1.5 s", "", "0.25 s"])]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     small_multiples(os.path.join(d, "compare.png"), "hotplug vs type3", labels, panels)
    ...     with open(os.path.join(d, "compare.png"), "rb") as f:
    ...         image = decode_png(f.read())
    >>> image.shape
    (218, 1400, 3)

Layout: the image is 1400 px wide (710 px for a single panel), two panels to a row, and
``64 + rows * (70 + 28 * len(labels))`` px tall.  Label ``i`` is drawn in
``PALETTE[i % len(PALETTE)]`` (Okabe-Ito, readable with the common colour-vision
deficiencies); bars of a panel are scaled to that panel's largest value.

:func:`encode_png` and :func:`decode_png` are the PNG codec underneath, for 8-bit RGB
images (``decode_png`` reads only what ``encode_png`` writes).
"""
from __future__ import annotations

import math
import numbers
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import ArrayShapeError, ConfigurationError, CorruptDataError, InputTypeError

__all__ = ["Panel", "small_multiples", "encode_png", "decode_png", "PALETTE"]

# Okabe & Ito (2008), ordered so that the first labels get the strongest colours and yellow
# (weak on white) comes late.
PALETTE = (
    (0x00, 0x72, 0xB2),  # blue
    (0xE6, 0x9F, 0x00),  # orange
    (0x00, 0x9E, 0x73),  # bluish green
    (0xD5, 0x5E, 0x00),  # vermillion
    (0xCC, 0x79, 0xA7),  # reddish purple
    (0x56, 0xB4, 0xE9),  # sky blue
    (0xF0, 0xE4, 0x42),  # yellow
    (0x00, 0x00, 0x00),  # black
)
# Text is dark grey, not black, so that no text pixel has a bar's colour (tests count them).
_INK = (0x22, 0x22, 0x22)
_MUTED = (0x77, 0x77, 0x77)
_FRAME = (0xD6, 0xD6, 0xD6)
_AXIS = (0xA8, 0xA8, 0xA8)
_WHITE = (0xFF, 0xFF, 0xFF)

# ---------------------------------------------------------------------------------------
# Font: printable ASCII 32..126, 5 pixels wide and 9 rows tall (7 above the baseline, 2 for
# descenders).  One string per glyph, one base-32 digit per row, top row first; bit 4 of a
# row is its leftmost pixel.  Drawn in a 6-pixel cell (one blank column between glyphs).
_FONT = (
    "000000000 444440400 aaa000000 aavavaa00 4fke5u400 op248j300 cik8lid00 448000000 "  #  !"#$%&'
    "248884200 842224800 04lel4000 044v44000 00000cc48 000e00000 00000cc00 11248gg00 "  # ()*+,-./
    "ehjlphe00 4c4444e00 eh1248v00 v2421he00 26aiv2200 vgu11he00 68guhhe00 v12488800 "  # 01234567
    "ehhehhe00 ehhf12c00 0cc0cc000 0cc0cc480 248g84200 00v0v0000 842124800 eh1240400 "  # 89:;<=>?
    "ehnlngf00 ehhvhhh00 uhhuhhu00 ehggghe00 sihhhis00 vgguggv00 vgguggg00 ehgnhhf00 "  # @ABCDEFG
    "hhhvhhh00 e44444e00 72222ic00 hikokih00 ggggggv00 hrllhhh00 hhpljhh00 ehhhhhe00 "  # HIJKLMNO
    "uhhuggg00 ehhhlid00 uhhukih00 fgge11u00 v44444400 hhhhhhe00 hhhhha400 hhhllla00 "  # PQRSTUVW
    "hha4ahh00 hha444400 v1248gv00 e88888e00 gg8421100 e22222e00 4ah000000 0000000v0 "  # XYZ[\]^_
    "842000000 00e1fhf00 ggmphhu00 00egghe00 11djhhf00 00ehvge00 698s88800 00fhhhf1e "  # `abcdefg
    "ggmphhh00 40c444e00 2062222ic ggikoki00 c44444e00 00qllhh00 00mphhh00 00ehhhe00 "  # hijklmno
    "00uhhhugg 00fhhhf11 00mpggg00 00fge1u00 88s889600 00hhhjd00 00hhha400 00hhlla00 "  # pqrstuvw
    "00ha4ah00 00hhhhf1e 00v248v00 344844300 444444440 o44244o00 008l20000 "  # xyz{|}~
).split()
_GLYPH_H, _GLYPH_W, _CELL_W = 9, 5, 6
_CAP_H = 7
_UNKNOWN = ord("?") - 32


def _glyph_table() -> np.ndarray:
    rows = np.array([[int(c, 32) for c in glyph] for glyph in _FONT], dtype=np.uint8)
    bits = (rows[:, :, None] >> np.arange(_GLYPH_W - 1, -1, -1, dtype=np.uint8)) & 1
    return bits.astype(bool)                 # (95, 9, 5)


_GLYPHS = _glyph_table()


def _text_mask(text: str, scale: int, bold: bool = False) -> np.ndarray:
    """Boolean pixels of ``text`` (height ``9 * scale``); anything not printable ASCII is '?'."""
    codes = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8).astype(np.intp) - 32
    codes[(codes < 0) | (codes >= len(_GLYPHS))] = _UNKNOWN
    n = len(codes)
    cells = np.zeros((_GLYPH_H, n, _CELL_W), dtype=bool)
    cells[:, :, :_GLYPH_W] = _GLYPHS[codes].transpose(1, 0, 2)
    mask = cells.reshape(_GLYPH_H, n * _CELL_W)[:, : max(n * _CELL_W - 1, 0)]
    mask = np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)
    if bold and mask.size:
        # One output pixel wider, not one glyph pixel: the 1-column gap between glyphs stays.
        wide = np.zeros((mask.shape[0], mask.shape[1] + 1), dtype=bool)
        wide[:, :-1] = mask
        wide[:, 1:] |= mask
        mask = wide
    return mask


def _text_width(nchars: int, scale: int) -> int:
    return max(nchars * _CELL_W - 1, 0) * scale


def _paint(img: np.ndarray, mask: np.ndarray, x: int, y: int, colour) -> None:
    """Set the pixels of ``mask`` placed at (x, y) to ``colour``, clipped to the image."""
    h, w = mask.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, img.shape[1]), min(y + h, img.shape[0])
    if x1 > x0 and y1 > y0:
        img[y0:y1, x0:x1][mask[y0 - y:y1 - y, x0 - x:x1 - x]] = colour


def _text(img, text: str, x: int, y: int, colour, scale: int, bold: bool = False) -> None:
    _paint(img, _text_mask(text, scale, bold), x, y, colour)


def _fill(img, x: int, y: int, w: int, h: int, colour) -> None:
    img[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)] = colour


def _frame(img, x: int, y: int, w: int, h: int, colour) -> None:
    _fill(img, x, y, w, 1, colour)
    _fill(img, x, y + h - 1, w, 1, colour)
    _fill(img, x, y, 1, h, colour)
    _fill(img, x + w - 1, y, 1, h, colour)


def _fit(text: str, nchars: int) -> str:
    return text if len(text) <= nchars else text[: nchars - 3] + "..."


# ---------------------------------------------------------------------------------------
# Chart


@dataclass(frozen=True)
class Panel:
    """One metric of a :func:`small_multiples` chart: a title and one value per label.

    ``values`` are numbers >= 0; ``None`` or NaN means "not available" and is drawn as no
    bar with the text ``n/a`` (whatever ``texts`` says).  ``texts`` (one per value) are
    printed after the bars, e.g. ``"8.0 GiB"``; by default a compact form of the value
    (``512``, ``0.25``, ``1.2M``).
    The values are stored as a tuple of floats (NaN for ``None``).

    Raises :class:`~dcdmap.errors.InputTypeError` for a title or text that is not a
    ``str`` or a value that is not a real number, :class:`~dcdmap.errors.ConfigurationError`
    for a negative or infinite value, and :class:`~dcdmap.errors.ArrayShapeError` when
    ``texts`` and ``values`` differ in length.

        >>> Panel("guest objects", [3, None]).values
        (3.0, nan)
        >>> Panel("objects", [3, -1])
        Traceback (most recent call last):
        ...
        dcdmap.errors.ConfigurationError: panel 'objects': value 1 is -1.0; values must be >= 0
    """

    title: str
    values: Sequence[float]
    texts: Optional[Sequence[str]] = None

    def __post_init__(self):
        if not isinstance(self.title, str):
            raise InputTypeError(f"a panel title must be a str, not {type(self.title).__name__}")
        where = f"panel {self.title!r}"
        if isinstance(self.values, (str, bytes)) or not hasattr(self.values, "__len__"):
            raise InputTypeError(f"{where}: values must be a sequence of numbers, "
                                 f"not {type(self.values).__name__}")
        values = []
        for i, v in enumerate(self.values):
            if v is None:
                v = math.nan
            elif isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise InputTypeError(f"{where}: value {i} is a {type(v).__name__}, not a number")
            v = float(v)
            if v < 0 or math.isinf(v):
                raise ConfigurationError(f"{where}: value {i} is {v}; values must be >= 0")
            values.append(v)
        object.__setattr__(self, "values", tuple(values))
        if self.texts is not None:
            if isinstance(self.texts, (str, bytes)) or not hasattr(self.texts, "__len__"):
                raise InputTypeError(f"{where}: texts must be a sequence of str")
            texts = tuple(self.texts)
            if len(texts) != len(values):
                raise ArrayShapeError(f"{where}: {len(texts)} texts for {len(values)} values")
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise InputTypeError(f"{where}: text {i} is a {type(t).__name__}, not a str")
            object.__setattr__(self, "texts", texts)

    def _shown(self, i: int) -> str:
        """The text printed after bar ``i``."""
        v = self.values[i]
        if math.isnan(v):
            return "n/a"
        return self.texts[i] if self.texts is not None else _compact(v)


def _compact(v: float) -> str:
    """Three significant digits at most, with k/M/G/T above 99999: 0.125, 12.3, 4096, 1.5M."""
    if v >= 1e5:
        for suffix in "kMGTPE":
            v /= 1000
            if v < 999.5 or suffix == "E":
                return f"{v:.3g}{suffix}"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


# Layout, in pixels.
_SCALE = 2                   # labels, values and panel titles
_TITLE_SCALE = 3
_MARGIN = 20                 # around the image
_TOP = 64                    # title band, panels start here
_PANEL_W = 670
_GAP = 20                    # between panels
_PAD = 14                    # inside a panel
_ROW = 28                    # pitch of the bars
_BAR = 20                    # height of a bar
_HEAD = 30                   # panel title and the space below it
_MAX_LABEL = 24              # characters; longer labels and texts are cut with "..."
_MAX_TEXT = 16


def _panel_height(nlabels: int) -> int:
    return 2 * _PAD + _HEAD + nlabels * _ROW - (_ROW - _BAR)


def _render(title: str, labels: Sequence[str], panels: Sequence[Panel]) -> np.ndarray:
    ncols = 1 if len(panels) == 1 else 2
    nrows = -(-len(panels) // ncols)
    ph = _panel_height(len(labels))
    width = 2 * _MARGIN + ncols * _PANEL_W + (ncols - 1) * _GAP
    height = _TOP + nrows * (ph + _GAP)
    img = np.full((height, width, 3), 255, dtype=np.uint8)

    char_w = _CELL_W * _SCALE
    _text(img, _fit(title, (width - 2 * _MARGIN) // (_CELL_W * _TITLE_SCALE)), _MARGIN, _MARGIN,
          _INK, _TITLE_SCALE, bold=True)

    labels = [_fit(lab, _MAX_LABEL) for lab in labels]
    texts = [[_fit(p._shown(i), _MAX_TEXT) for i in range(len(labels))] for p in panels]
    label_w = _text_width(max(map(len, labels)), _SCALE)
    text_w = _text_width(max(len(t) for row in texts for t in row), _SCALE)
    bar_dx = _PAD + label_w + char_w              # bars start here, from the panel's left
    bar_w = _PANEL_W - bar_dx - char_w - text_w - _PAD
    text_dy = (_BAR - _CAP_H * _SCALE) // 2      # centres capitals on the bar

    for k, (panel, row_texts) in enumerate(zip(panels, texts)):
        px = _MARGIN + (k % ncols) * (_PANEL_W + _GAP)
        py = _TOP + (k // ncols) * (ph + _GAP)
        _frame(img, px, py, _PANEL_W, ph, _FRAME)
        _text(img, _fit(panel.title, (_PANEL_W - 2 * _PAD) // char_w), px + _PAD, py + _PAD,
              _INK, _SCALE, bold=True)
        y0 = py + _PAD + _HEAD
        bx = px + bar_dx
        _fill(img, bx - 1, y0 - 4, 1, len(labels) * _ROW - (_ROW - _BAR) + 8, _AXIS)
        values = np.array(panel.values)
        top = np.nanmax(values) if not np.isnan(values).all() else 0.0
        for i, (label, text) in enumerate(zip(labels, row_texts)):
            y = y0 + i * _ROW
            _text(img, label, px + _PAD, y + text_dy, _INK, _SCALE)
            v = values[i]
            n = 0
            if v > 0:   # NaN compares False: no bar
                n = max(int(round(v / top * bar_w)), 1)
                _fill(img, bx, y, n, _BAR, PALETTE[i % len(PALETTE)])
            _text(img, text, bx + n + char_w // 2 + 2, y + text_dy,
                  _MUTED if math.isnan(v) else _INK, _SCALE)
    return img


def small_multiples(path, title: str, labels: Sequence[str], panels: Sequence[Panel]) -> None:
    """Write a PNG chart to ``path``: ``title``, then one panel of horizontal bars per metric.

    Each panel has one bar per label, in the label's colour (``PALETTE``), scaled to the
    panel's largest value and followed by the panel's text for it; a value of ``None``/NaN
    draws no bar and the text ``n/a``.  Panels fill a grid two wide; labels longer than
    24 characters and texts longer than 16 are cut short with ``...``.  The file is written
    to ``path + ".tmp"`` and renamed, so a failed call leaves no partial file.  A chart of
    5 labels and 6 panels (1400 x 694 px) takes about 30 ms, most of it in zlib.

    Raises :class:`~dcdmap.errors.InputTypeError` for a title or label that is not a
    ``str`` or a panel that is not a :class:`Panel`, :class:`~dcdmap.errors.ConfigurationError`
    when there are no labels or no panels, and :class:`~dcdmap.errors.ArrayShapeError` when a
    panel has not one value per label; nothing is written then.

        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     small_multiples(os.path.join(d, "x.png"), "t", ["a", "b"], [Panel("p", [1])])
        Traceback (most recent call last):
        ...
        dcdmap.errors.ArrayShapeError: panel 'p' has 1 values for 2 labels
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise InputTypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if not isinstance(title, str):
        raise InputTypeError(f"the chart title must be a str, not {type(title).__name__}")
    if isinstance(labels, (str, bytes)):
        raise InputTypeError("labels must be a sequence of str, not one str")
    labels = list(labels)
    panels = list(panels)
    if not labels:
        raise ConfigurationError("a chart needs at least one label")
    if not panels:
        raise ConfigurationError("a chart needs at least one panel")
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise InputTypeError(f"label {i} is a {type(label).__name__}, not a str")
    for k, panel in enumerate(panels):
        if not isinstance(panel, Panel):
            raise InputTypeError(f"panel {k} is a {type(panel).__name__}, not a Panel")
        if len(panel.values) != len(labels):
            raise ArrayShapeError(f"panel {panel.title!r} has {len(panel.values)} values "
                                  f"for {len(labels)} labels")

    data = encode_png(_render(title, labels, panels))
    path = os.fspath(path)
    tmp = path + (b".tmp" if isinstance(path, bytes) else ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------------------------------
# PNG (ISO/IEC 15948): signature, IHDR, one IDAT, IEND; 8-bit RGB, filter 0 on every row.

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_DIM = 2**31 - 1


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png(rgb: np.ndarray) -> bytes:
    """The PNG file of an ``(height, width, 3)`` ``uint8`` RGB image.

    Every row uses filter 0 (none): the charts are mostly flat colour, which zlib packs
    well without prediction.  Raises :class:`~dcdmap.errors.InputTypeError` for anything
    but a ``uint8`` array and :class:`~dcdmap.errors.ArrayShapeError` for another shape.

        >>> png = encode_png(np.zeros((2, 3, 3), dtype=np.uint8))
        >>> png[:8], decode_png(png).shape
        (b'\\x89PNG\\r\\n\\x1a\\n', (2, 3, 3))
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise InputTypeError(f"an image must be a uint8 numpy array, not "
                             f"{getattr(rgb, 'dtype', type(rgb).__name__)}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or not (0 < rgb.shape[0] <= _MAX_DIM
                                                  and 0 < rgb.shape[1] <= _MAX_DIM):
        raise ArrayShapeError(f"an image must have shape (height, width, 3), not {rgb.shape}")
    h, w, _ = rgb.shape
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)    # column 0: the filter byte
    raw[:, 1:] = rgb.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"".join((_SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)), _chunk(b"IEND", b"")))


def decode_png(data: bytes) -> np.ndarray:
    """The ``(height, width, 3)`` ``uint8`` image of a PNG written by :func:`encode_png`.

    Reads 8-bit RGB, non-interlaced PNGs whose rows all use filter 0; IDAT may be split
    over several chunks and ancillary chunks are skipped.  Raises
    :class:`~dcdmap.errors.CorruptDataError` for anything else: a bad signature or CRC,
    truncated data, another colour type, depth, filter or interlace.

        >>> decode_png(b"GIF89a")
        Traceback (most recent call last):
        ...
        dcdmap.errors.CorruptDataError: not a PNG file (bad signature)
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputTypeError(f"PNG data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if data[:8] != _SIGNATURE:
        raise CorruptDataError("not a PNG file (bad signature)")
    pos, header, idat = 8, None, []
    while True:
        if pos + 12 > len(data):
            raise CorruptDataError(f"PNG truncated at byte {pos}: no IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise CorruptDataError(f"PNG truncated: {kind!r} chunk at byte {pos} needs {length} "
                                   f"bytes, {len(data) - pos - 12} left")
        body = data[pos + 8:end - 4]
        if zlib.crc32(kind + body) != struct.unpack_from(">I", data, end - 4)[0]:
            raise CorruptDataError(f"bad CRC in {kind!r} chunk at byte {pos}")
        if header is None and kind != b"IHDR":
            raise CorruptDataError(f"PNG starts with a {kind!r} chunk, not IHDR")
        if kind == b"IHDR":
            if header is not None or length != 13:
                raise CorruptDataError("bad or repeated IHDR chunk")
            header = struct.unpack(">IIBBBBB", body)
            w, h, depth, colour, compression, filtering, interlace = header
            if not (0 < w <= _MAX_DIM and 0 < h <= _MAX_DIM):
                raise CorruptDataError(f"bad PNG size {w} x {h}")
            if (depth, colour, compression, filtering, interlace) != (8, 2, 0, 0, 0):
                raise CorruptDataError(
                    f"unsupported PNG: bit depth {depth}, colour type {colour}, compression "
                    f"{compression}, filter method {filtering}, interlace {interlace} "
                    f"(only 8-bit RGB, non-interlaced is read)")
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            if end != len(data):
                raise CorruptDataError(f"{len(data) - end} bytes after the IEND chunk")
            break
        elif (kind[0] & 0x20) == 0:             # upper-case first letter: a critical chunk
            raise CorruptDataError(f"unsupported critical PNG chunk {kind!r}")
        pos = end

    w, h = header[0], header[1]
    expected = h * (1 + 3 * w)
    compressed = b"".join(idat)
    if expected > 1100 * len(compressed) + 1024:      # deflate packs at most ~1032:1
        raise CorruptDataError(f"PNG image data too short for {w} x {h} pixels")
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(compressed, expected + 1)
    except zlib.error as e:
        raise CorruptDataError(f"PNG image data is corrupt: {e}") from None
    if len(raw) != expected or not inflate.eof:
        raise CorruptDataError(f"PNG image data holds {len(raw)} bytes, not {expected}, or is "
                               f"cut short")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, 1 + 3 * w)
    bad = np.flatnonzero(rows[:, 0])
    if bad.size:
        raise CorruptDataError(f"unsupported PNG: row {bad[0]} uses filter type "
                               f"{rows[bad[0], 0]} (only 0 is read)")
    return rows[:, 1:].reshape(h, w, 3).copy()        # owns its memory, writable
