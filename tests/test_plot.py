"""dcdmap.plot: the PNG codec, checked against the format itself, and charts measured in pixels."""
from __future__ import annotations

import math
import os
import struct
import zlib

import numpy as np
import pytest

from dcdmap import plot
from dcdmap.errors import ArrayShapeError, ConfigurationError, CorruptDataError, InputTypeError
from dcdmap.plot import PALETTE, Panel, decode_png, encode_png, small_multiples

SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = math.nan

LABELS = ["hotplug", "hotplug-kmem", "virtio-mem", "virtio-mem-extended", "type3"]
VALUES = [
    [64, 64, 40.5, 36.25, 32],
    [8192, 4096, 254, 126, 0],
    [128, 128, 1620, 1622, 14],
    [256, 260, 3310, 3400, 28],
    [12.5, 37.5, 98.4, 99.9, None],
    [0.41, 0.43, 1.92, 2.05, 0.08],
]
TITLES = ["guest address space used (GiB)", "GPA wasted (MiB)", "guest objects",
          "control operations", "capacity taken back (%)", "run time (s)"]


# --- an independent reading of the PNG format ----------------------------------------------

def chunks(png: bytes) -> list[tuple[bytes, bytes, int]]:
    """(type, body, stored CRC) of every chunk, after the signature."""
    assert png[:8] == SIGNATURE
    out, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind = png[pos + 4:pos + 8]
        body = png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        out.append((kind, body, crc))
        pos += 12 + length
    assert pos == len(png)
    return out


def build(*parts: tuple[bytes, bytes]) -> bytes:
    """A PNG made of the given (type, body) chunks, with correct CRCs."""
    return SIGNATURE + b"".join(struct.pack(">I", len(b)) + k + b
                                + struct.pack(">I", zlib.crc32(k + b)) for k, b in parts)


def ihdr(w, h, depth=8, colour=2, compression=0, filtering=0, interlace=0) -> bytes:
    return struct.pack(">IIBBBBB", w, h, depth, colour, compression, filtering, interlace)


def rgb(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --- codec ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (2, 3), (37, 53), (120, 257)])
def test_round_trip(shape):
    rng = np.random.default_rng(sum(shape))
    image = rgb(rng, *shape)
    back = decode_png(encode_png(image))
    assert back.dtype == np.uint8 and back.shape == image.shape
    assert np.array_equal(back, image)
    assert back.flags.owndata and back.flags.writeable


def test_round_trip_of_a_non_contiguous_view():
    image = rgb(np.random.default_rng(1), 20, 30)[::2, ::-3]
    assert np.array_equal(decode_png(encode_png(image)), image)


def test_png_structure():
    image = rgb(np.random.default_rng(2), 5, 7)
    png = encode_png(image)
    parts = chunks(png)
    assert [k for k, _, _ in parts] == [b"IHDR", b"IDAT", b"IEND"]
    for kind, body, crc in parts:
        assert crc == zlib.crc32(kind + body)
    assert parts[0][1] == ihdr(7, 5)          # width, height, depth 8, RGB, deflate, no interlace
    assert parts[2][1] == b""
    raw = np.frombuffer(zlib.decompress(parts[1][1]), dtype=np.uint8).reshape(5, 1 + 7 * 3)
    assert not raw[:, 0].any()                # filter type 0 on every row
    assert np.array_equal(raw[:, 1:].reshape(5, 7, 3), image)


def test_decode_accepts_split_idat_and_ancillary_chunks():
    image = rgb(np.random.default_rng(3), 4, 6)
    raw = b"".join(b"\0" + row.tobytes() for row in image)
    z = zlib.compress(raw)
    png = build((b"IHDR", ihdr(6, 4)), (b"tEXt", b"Title\0x"), (b"IDAT", z[:10]),
                (b"IDAT", z[10:]), (b"IEND", b""))
    assert np.array_equal(decode_png(png), image)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 3), dtype=np.float64), [[[0, 0, 0]]],
                                 np.zeros((2, 2, 3), dtype=np.int16)])
def test_encode_rejects_other_types(bad):
    with pytest.raises(InputTypeError):
        encode_png(bad)


@pytest.mark.parametrize("shape", [(2, 2), (2, 2, 4), (0, 3, 3), (3, 0, 3), (1, 1, 1, 3)])
def test_encode_rejects_other_shapes(shape):
    with pytest.raises(ArrayShapeError):
        encode_png(np.zeros(shape, dtype=np.uint8))


# --- decode errors ------------------------------------------------------------------------------

SMALL = encode_png(rgb(np.random.default_rng(4), 3, 4))


def test_bad_signature():
    for png in (b"", b"GIF89a", b"\x89PNG\r\n\x1a\r" + SMALL[8:]):
        with pytest.raises(CorruptDataError, match="signature"):
            decode_png(png)


@pytest.mark.parametrize("chunk", range(3))
def test_flipped_crc_byte(chunk):
    pos = 8
    for kind, body, _ in chunks(SMALL)[:chunk]:
        pos += 12 + len(body)
    length = struct.unpack(">I", SMALL[pos:pos + 4])[0]
    crc_at = pos + 8 + length
    png = bytearray(SMALL)
    png[crc_at + 1] ^= 0x40
    with pytest.raises(CorruptDataError, match="CRC"):
        decode_png(bytes(png))
    png = bytearray(SMALL)
    png[pos + 4] ^= 0x20                     # the chunk type: covered by the CRC as well
    with pytest.raises(CorruptDataError, match="CRC"):
        decode_png(bytes(png))


def test_flipped_data_byte():
    png = bytearray(SMALL)
    png[8 + 12 + 13 + 8 + 3] ^= 0x01         # inside the IDAT body
    with pytest.raises(CorruptDataError, match="CRC"):
        decode_png(bytes(png))


def test_every_truncation_is_reported():
    for n in range(len(SMALL)):
        with pytest.raises(CorruptDataError):
            decode_png(SMALL[:n])


@pytest.mark.parametrize("fields", [dict(depth=16), dict(colour=6), dict(colour=0),
                                    dict(interlace=1), dict(filtering=1), dict(compression=1)])
def test_unsupported_header(fields):
    raw = zlib.compress(b"\0" * (1 + 3 * 2) * 2)
    png = build((b"IHDR", ihdr(2, 2, **fields)), (b"IDAT", raw), (b"IEND", b""))
    with pytest.raises(CorruptDataError, match="unsupported"):
        decode_png(png)


def test_other_malformed_files():
    raw = b"\0" + bytes(6) + b"\1" + bytes(6)               # row 1 uses filter type 1 (Sub)
    cases = {
        "filter type": build((b"IHDR", ihdr(2, 2)), (b"IDAT", zlib.compress(raw)),
                             (b"IEND", b"")),
        "not IHDR": build((b"IDAT", zlib.compress(raw)), (b"IEND", b"")),
        "critical": build((b"IHDR", ihdr(2, 2)), (b"PLTX", b""), (b"IEND", b"")),
        "after the IEND": SMALL + b"\0",
        "bytes, not": build((b"IHDR", ihdr(2, 2)), (b"IDAT", zlib.compress(raw[:-1])),
                            (b"IEND", b"")),
        "corrupt": build((b"IHDR", ihdr(2, 2)), (b"IDAT", b"not zlib"), (b"IEND", b"")),
        "too short": build((b"IHDR", ihdr(50000, 50000)), (b"IDAT", zlib.compress(raw)),
                           (b"IEND", b"")),
        "size": build((b"IHDR", ihdr(0, 2)), (b"IEND", b"")),
    }
    for message, png in cases.items():
        with pytest.raises(CorruptDataError, match=message):
            decode_png(png)


# --- the font -----------------------------------------------------------------------------------

def test_every_printable_ascii_glyph_is_defined_and_distinct():
    assert plot._GLYPHS.shape == (95, 9, 5)
    seen = {}
    for code in range(32, 127):
        glyph = plot._GLYPHS[code - 32]
        assert glyph.any() == (code != 32), f"glyph {chr(code)!r}"
        key = glyph.tobytes()
        assert key not in seen, f"{chr(code)!r} looks like {seen.get(key)!r}"
        seen[key] = chr(code)
    # 7 rows above the baseline: only descenders and ',;_|' use the last two rows.
    low = {chr(c) for c in range(32, 127) if plot._GLYPHS[c - 32, 7:].any()}
    assert low == set("gjpqy,;_|")


def test_text_masks():
    assert plot._text_mask("", 2).shape == (18, 0)
    assert plot._text_mask("ab", 1).shape == (9, 11)            # 6-pixel cells, no trailing gap
    assert plot._text_mask("ab", 3).shape == (27, 33)
    assert plot._text_mask("ab", 2, bold=True).shape == (18, 23)
    question = plot._text_mask("?", 2)
    for other in ("\u00e9", "\t", "\x7f", "\u2011"):                 # not printable ASCII: '?'
        assert np.array_equal(plot._text_mask(other, 2), question)


@pytest.mark.parametrize("value, text", [(0, "0"), (0.125, "0.125"), (12.34, "12.3"),
                                         (4096, "4096"), (99999, "99999"), (123456, "123k"),
                                         (1.5e6, "1.5M"), (999_600, "1M"), (2e18, "2E")])
def test_compact_numbers(value, text):
    assert plot._compact(value) == text


# --- charts -----------------------------------------------------------------------------------

def bars(image: np.ndarray, colour) -> list[tuple[int, int, int, int]]:
    """(y, x, width, height) of each solid rectangle of ``colour``, in reading order."""
    mask = (image == np.array(colour, dtype=np.uint8)).all(axis=2)
    runs = {}                                    # (x0, x1) -> rows holding that run
    for y in np.flatnonzero(mask.any(axis=1)):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], mask[y].view(np.int8), [0]))))
        for x0, x1 in zip(edges[::2], edges[1::2]):
            runs.setdefault((int(x0), int(x1)), []).append(int(y))
    out = []
    for (x0, x1), ys in runs.items():
        start = ys[0]
        for a, b in zip(ys, ys[1:] + [None]):
            if b != a + 1:
                out.append((start, x0, x1 - x0, a + 1 - start))
                start = b
    return sorted(out)


def write(tmp_path, labels=LABELS, values=VALUES, titles=TITLES, title="dcdmap compare"):
    path = tmp_path / "chart.png"
    small_multiples(path, title, labels, [Panel(t, v) for t, v in zip(titles, values)])
    assert os.listdir(tmp_path) == ["chart.png"]             # no .tmp left behind
    return decode_png(path.read_bytes())


def test_chart_size_and_bars(tmp_path):
    image = write(tmp_path)
    assert image.shape == (64 + 3 * (70 + 28 * len(LABELS)), 1400, 3)
    assert (image[0] == 255).all() and (image[-1] == 255).all()      # white margins
    lengths = np.zeros((len(VALUES), len(LABELS)))
    starts = set()
    for i in range(len(LABELS)):
        panels = [k for k, v in enumerate(VALUES) if v[i]]           # zero or n/a: no bar
        found = bars(image, PALETTE[i])
        assert len(found) == len(panels), f"label {i}"
        for k, (y, x, w, h) in zip(panels, found):
            assert h == found[0][3] >= 12, "every bar has the same height"
            lengths[k, i] = w
            starts.add((k % 2, x))
    assert len(starts) == 2, "bars start on one line in each column of panels"
    for k, row in enumerate(VALUES):
        v = np.array([NAN if x is None else x for x in row], dtype=float)
        top = np.nanargmax(v)
        expected = lengths[k, top] * np.nan_to_num(v) / v[top]
        assert np.all(np.abs(lengths[k] - expected) <= 2), (k, lengths[k], expected)
        assert lengths[k, top] > 200
    # Every panel's longest bar has the same length: the panels share one layout.
    assert len({lengths[k].max() for k in range(len(VALUES))}) == 1


def test_nan_and_none_draw_no_bar(tmp_path):
    image = write(tmp_path, labels=["a", "b", "c", "d"], values=[[2, NAN, 1, None]],
                  titles=["p"])
    assert image.shape == (64 + 70 + 28 * 4, 710, 3)                  # one panel: one column
    assert [len(bars(image, PALETTE[i])) for i in range(4)] == [1, 0, 1, 0]
    (_, _, w0, _), = bars(image, PALETTE[0])
    (_, _, w2, _), = bars(image, PALETTE[2])
    assert abs(w2 - w0 / 2) <= 1


def test_all_zero_or_missing_panel(tmp_path):
    image = write(tmp_path, labels=["a", "b"], values=[[0, 0], [None, NAN]], titles=["z", "n"])
    assert not any(bars(image, c) for c in PALETTE[:2])


def test_tiny_values_still_show(tmp_path):
    image = write(tmp_path, labels=["a", "b"], values=[[1e6, 1]], titles=["p"])
    assert bars(image, PALETTE[1])[0][2] == 1


def test_more_labels_than_colours_and_awkward_text(tmp_path):
    labels = [f"presentation-number-{i}-\u00e9\u00e8" for i in range(11)]  # long, not ASCII
    image = write(tmp_path, labels=labels, values=[list(range(1, 12))] * 3, titles=["x" * 200] * 3,
                  title="\u2603 " * 200)
    assert image.shape == (64 + 2 * (70 + 28 * 11), 1400, 3)
    assert len(bars(image, PALETTE[0])) == 3 * 2                     # labels 0 and 8 share it


def test_texts_are_used(tmp_path):
    def draw(texts):
        path = tmp_path / "t.png"
        small_multiples(path, "t", ["a", "b"], [Panel("p", [1, 2], texts)])
        return decode_png(path.read_bytes())
    default, given = draw(None), draw(["1", "2"])
    assert np.array_equal(default, given)                  # the compact form of 1 and 2
    assert not np.array_equal(default, draw(["1.0 GiB", "2.0 GiB"]))


def test_writes_over_an_existing_file(tmp_path):
    path = tmp_path / "chart.png"
    path.write_bytes(b"old")
    small_multiples(str(path), "t", ["a"], [Panel("p", [1])])
    assert decode_png(path.read_bytes()).shape[1] == 710


# --- bad input ---------------------------------------------------------------------------------

GOOD = [Panel("p", [1, 2])]


@pytest.mark.parametrize("args, error, message", [
    (("t", ["a"], GOOD), ArrayShapeError, "2 values for 1 labels"),
    (("t", [], []), ConfigurationError, "at least one label"),
    (("t", ["a", "b"], []), ConfigurationError, "at least one panel"),
    ((None, ["a", "b"], GOOD), InputTypeError, "title"),
    ((b"t", ["a", "b"], GOOD), InputTypeError, "title"),
    (("t", "ab", GOOD), InputTypeError, "labels"),
    (("t", ["a", 2], GOOD), InputTypeError, "label 1"),
    (("t", ["a", "b"], [("p", [1, 2])]), InputTypeError, "panel 0"),
])
def test_bad_calls_write_nothing(tmp_path, args, error, message):
    with pytest.raises(error, match=message):
        small_multiples(tmp_path / "chart.png", *args)
    assert os.listdir(tmp_path) == []


def test_a_failed_call_keeps_the_old_file(tmp_path):
    path = tmp_path / "chart.png"
    path.write_bytes(b"old")
    with pytest.raises(ArrayShapeError):
        small_multiples(path, "t", ["a"], GOOD)
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):                # replacing a directory fails after the write
        small_multiples(tmp_path / "dir", "t", ["a", "b"], GOOD)
    assert sorted(os.listdir(tmp_path)) == ["chart.png", "dir"]
    assert path.read_bytes() == b"old"


def test_bad_path_type(tmp_path):
    with pytest.raises(InputTypeError):
        small_multiples(3, "t", ["a", "b"], GOOD)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(values=[1, -1]), ConfigurationError, "value 1 is -1.0"),
    (dict(values=[math.inf, 1]), ConfigurationError, "value 0 is inf"),
    (dict(values=[True, 1]), InputTypeError, "value 0 is a bool"),
    (dict(values=["1", 1]), InputTypeError, "value 0 is a str"),
    (dict(values=5), InputTypeError, "sequence"),
    (dict(values="12"), InputTypeError, "sequence"),
    (dict(values=[1, 2], texts=["a"]), ArrayShapeError, "1 texts for 2 values"),
    (dict(values=[1, 2], texts="ab"), InputTypeError, "texts"),
    (dict(values=[1, 2], texts=["a", 2]), InputTypeError, "text 1"),
    (dict(title=3, values=[1]), InputTypeError, "title"),
])
def test_bad_panels(kwargs, error, message):
    kwargs.setdefault("title", "p")
    with pytest.raises(error, match=message):
        Panel(**kwargs)


def test_panel_normalises_values():
    p = Panel("p", np.array([1, 2], dtype=np.int32), ["x", "y"])
    assert p.values == (1.0, 2.0) and p.texts == ("x", "y")
    assert math.isnan(Panel("p", [None]).values[0])
    assert [Panel("p", [0.5, None])._shown(i) for i in (0, 1)] == ["0.5", "n/a"]
    assert Panel("p", [NAN], ["given"])._shown(0) == "n/a"
