"""Frame codecs: the wire convention a real SLM/DMD and its wire-level twin share (docs/architecture.md).

* field sequence panel (input encoder, backward probe): row r = the pattern shown at trigger r, pixel
  code c = the signed field (c - 2**(bits-1)) / (2**(bits-1) - 1) * full_scale (saturation units);
* weight SLM frame, layout 'pairs' (row 2i = g+ of weight row i, row 2i+1 = g-) or 'checkerboard'
  (a k x k checkerboard block of (g+, g-) per weight), 8-bit gray levels;
* DMD frame: weight (i, j) -> a + block at columns 2j and a - block at 2j+1 (k x k mirrors each), the
  first n mirrors of a block (row-major) on;
* IQ sequence of an arbitrary-waveform generator (the chip's IQ modulators): complex field patterns
  (batch, n) -> int16 codes (batch, n, 2) = [I, Q], code +-32767 = +-full scale per quadrature; a field
  beyond full scale is a SafetyLimitError before anything is encoded (never clipped).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightloop.errors import SafetyLimitError

__all__ = [
    "IQ_CODE_MAX",
    "encode_iq",
    "decode_iq",
    "FIELD_BITS",
    "encode_fields",
    "decode_fields",
    "weight_panel_shape",
    "render_weight_frame",
    "decode_weight_frame",
    "render_dmd_frame",
    "decode_dmd_frame",
]

#: bit depth of the input/probe sequence panels of the twin
FIELD_BITS = 16


def encode_fields(fields: NDArray[np.floating[Any]], full_scale: float, bits: int) -> NDArray[np.integer[Any]]:
    """Signed fields -> codes: zero field = 2**(bits-1), +-full_scale = zero +- (2**(bits-1) - 1)."""
    zero, levels = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    codes = np.rint(np.clip(np.asarray(fields, np.float64) * (levels / full_scale), -levels, levels)) + zero
    return codes.astype(np.uint16 if bits > 8 else np.uint8)


def decode_fields(codes: NDArray[np.integer[Any]], full_scale: float, bits: int) -> NDArray[np.float32]:
    """Inverse of encode_fields (float32 fields)."""
    zero, levels = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    return ((codes.astype(np.float32) - np.float32(zero)) * np.float32(full_scale / levels)).astype(np.float32)


def weight_panel_shape(shape: tuple[int, int], layout: str, block_pixels: int = 1) -> tuple[int, int]:
    """Pixels (rows, cols) a (out, in) weight image needs in the given layout."""
    out, inp = shape
    if layout == "pairs":
        return 2 * out, inp
    return out * block_pixels, inp * block_pixels


def render_weight_frame(gray_plus: NDArray[np.uint8], gray_minus: NDArray[np.uint8], layout: str,
                        block_pixels: int = 1, panel: tuple[int, int] | None = None) -> NDArray[np.uint8]:
    """Gray-level image of the weight blocks (top-left of a panel of zeros if `panel` is given)."""
    out, inp = gray_plus.shape
    rows, cols = weight_panel_shape((out, inp), layout, block_pixels)
    frame = np.zeros(panel or (rows, cols), dtype=np.uint8)
    if layout == "pairs":
        frame[0:rows:2, :inp] = gray_plus
        frame[1:rows:2, :inp] = gray_minus
    else:
        k = block_pixels
        parity = (np.add.outer(np.arange(k), np.arange(k)) % 2).astype(bool)       # (k, k): True = g-
        img = np.where(parity[None, :, None, :], gray_minus[:, None, :, None], gray_plus[:, None, :, None])
        frame[:rows, :cols] = img.reshape(rows, cols)
    return frame


def decode_weight_frame(frame: NDArray[np.integer[Any]], shape: tuple[int, int], layout: str,
                        block_pixels: int = 1) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """(g+, g-) of each weight from a displayed frame (inverse of render_weight_frame)."""
    out, inp = shape
    if layout == "pairs":
        return (np.ascontiguousarray(frame[0:2 * out:2, :inp], dtype=np.uint8),
                np.ascontiguousarray(frame[1:2 * out:2, :inp], dtype=np.uint8))
    k = block_pixels
    return (np.ascontiguousarray(frame[0:out * k:k, 0:inp * k:k], dtype=np.uint8),
            np.ascontiguousarray(frame[0:out * k:k, 1:inp * k:k], dtype=np.uint8))


def render_dmd_frame(on_plus: NDArray[np.integer[Any]], on_minus: NDArray[np.integer[Any]], k: int,
                     panel: tuple[int, int] | None = None) -> NDArray[np.bool_]:
    """Binary mirror image: weight (i, j) -> a + block at columns 2j and a - block at 2j+1 (k x k mirrors each),
    the first n mirrors of a block (row-major) on."""
    out, inp = on_plus.shape
    idx = np.arange(k * k)
    pair = np.stack([on_plus, on_minus], axis=2).astype(np.int64)            # (out, in, 2)
    blocks = idx[None, None, None, :] < pair[..., None]                       # (out, in, 2, k*k)
    img = blocks.reshape(out, inp, 2, k, k).transpose(0, 3, 1, 2, 4).reshape(out * k, inp * 2 * k)
    if panel is None:
        return img
    frame = np.zeros(panel, dtype=bool)
    frame[: img.shape[0], : img.shape[1]] = img
    return frame


def decode_dmd_frame(frame: NDArray[np.integer[Any]] | NDArray[np.bool_], shape: tuple[int, int],
                     k: int) -> tuple[NDArray[np.uint16], NDArray[np.uint16]]:
    """On-mirror counts (+ block, - block) of each weight from a displayed binary frame (inverse of render)."""
    out, inp = shape
    on = np.asarray(frame[: out * k, : 2 * inp * k]).astype(bool)
    counts = on.reshape(out, k, inp, 2, k).sum(axis=(1, 4))
    return counts[..., 0].astype(np.uint16), counts[..., 1].astype(np.uint16)


#: int16 IQ code of +full scale (the most negative code -32768 is never sent: the range is symmetric)
IQ_CODE_MAX = 32767


def encode_iq(fields: ArrayLike, full_scale: ArrayLike, what: str = "IQ fields") -> NDArray[np.int16]:
    """Complex fields (batch, n) -> int16 codes (batch, n, 2) [I, Q]; code 32767 = +full_scale (per channel or scalar).

    A non-finite field or a quadrature beyond full scale raises SafetyLimitError before anything is encoded."""
    f = np.asarray(fields)
    if f.ndim != 2:
        raise ValueError(f"{what}: expected complex fields of shape (batch, n), got shape {f.shape}")
    fs = np.broadcast_to(np.asarray(full_scale, np.float64), (f.shape[1],))
    if not (np.isfinite(fs).all() and (fs > 0).all()):
        raise ValueError(f"{what}: full scale {fs.tolist()}; expected finite values > 0")
    iq = np.stack([f.real, f.imag], axis=-1).astype(np.float64)          # (batch, n, 2)
    if not np.isfinite(iq).all():
        raise SafetyLimitError(f"{what}: fields contain NaN or inf; nothing written")
    ratio = np.abs(iq) / fs[None, :, None]
    if ratio.size and float(ratio.max()) > 1.0 + 1e-6:
        b, c, q = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        raise SafetyLimitError(f"{what}: pattern {b} channel {c} {'IQ'[q]} = {iq[b, c, q]:.6g} exceeds the full scale "
                               f"{fs[c]:.6g} ({int((ratio > 1.0 + 1e-6).sum())} value(s) beyond it); nothing written")
    return np.rint(ratio * np.sign(iq) * IQ_CODE_MAX).astype(np.int16)   # |ratio| <= 1 + 1e-6: rint stays <= 32767


def decode_iq(codes: ArrayLike, full_scale: ArrayLike) -> NDArray[np.complex128]:
    """Inverse of encode_iq: int16 codes (batch, n, 2) -> complex fields (batch, n) in the full scale's unit."""
    c = np.asarray(codes)
    if c.ndim != 3 or c.shape[-1] != 2:
        raise ValueError(f"IQ codes: expected shape (batch, n, 2), got {c.shape}")
    fs = np.broadcast_to(np.asarray(full_scale, np.float64), (c.shape[1],))
    scale = fs[None, :] / IQ_CODE_MAX
    return c[..., 0].astype(np.float64) * scale + 1j * (c[..., 1].astype(np.float64) * scale)
