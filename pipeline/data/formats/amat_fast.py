"""The fast path of the amat reader: fixed-width `%.18e` text (what the published files hold) converted with
whole-column integer arithmetic, 8 digits at a time inside one uint64 (SWAR), the exponent field looked up
through a perfect hash. amat.general_values, NumPy's own reader, is the readable reference it is tested
against (tests/test_formats_amat.py): both give the same pixels; a block in any other layout is left to it."""

from __future__ import annotations

import numpy as np

_SWAR_ONES = np.uint64(0x3030303030303030)  # eight ASCII '0's
_SWAR_HIGH = np.uint64(0xF0F0F0F0F0F0F0F0)
_SWAR_SIXES = np.uint64(0x0606060606060606)


def _exponent_hash() -> tuple[np.uint32, np.ndarray, np.ndarray]:
    """A perfect hash of the 200 two-digit exponent fields "e+00".."e-99", read as little-endian uint32
    keys, to 16-bit slots: (key * multiplier mod 2**32) >> 16. Returns the multiplier, the key each slot
    belongs to (0 where none: no field reads as 0), and 10**(exponent - 8) per slot (the -8 scales the
    nine-digit mantissa)."""
    fields = [f"e{sign}{magnitude:02d}" for sign in "+-" for magnitude in range(100)]
    keys = np.frombuffer("".join(fields).encode(), "<u4")
    multiplier = 0x9E3779B1  # Knuth's golden-ratio constant, then the next odd ones until no two keys collide
    while len(np.unique(slots := (keys * np.uint32(multiplier)) >> np.uint32(16))) < len(keys):
        multiplier += 2
    owner, powers = np.zeros(1 << 16, np.uint32), np.zeros(1 << 16)
    owner[slots] = keys
    powers[slots] = 10.0 ** (np.array([int(field[1:]) for field in fields]) - 8)
    return np.uint32(multiplier), owner, powers


_EXP_MULTIPLIER, _EXP_OWNER, _EXP_POWERS = _exponent_hash()


def _eight_digits(columns: np.ndarray) -> np.ndarray | None:
    """(N, 8) ASCII bytes -> (N,) uint64: the eight digits as one number, combined inside one uint64 (SWAR);
    None unless every byte is a digit. `columns` may be a strided view whose rows are contiguous."""
    # Byte k = k-th character (little endian). XOR with '0' leaves each digit's value in its byte; a byte
    # was a digit iff that value is <= 9: no high nibble, and adding 6 does not carry into one.
    # In-place operations: a fresh 160 KB temporary per operation costs more than the operation.
    x = columns.view("<u8").ravel() ^ _SWAR_ONES
    bad = x + _SWAR_SIXES
    bad |= x
    bad &= _SWAR_HIGH
    if bad.any():
        return None
    # Pairs, then quads, then octets: each multiply adds 10x (100x, 10000x) the earlier digit group to
    # the later one; the shift and mask keep the sums (the last shift leaves nothing to mask).
    for multiplier, shift, mask in ((10 << 8 | 1, 8, 0x00FF00FF00FF00FF), (100 << 16 | 1, 16, 0x0000FFFF0000FFFF)):
        x *= np.uint64(multiplier)
        x >>= np.uint64(shift)
        x &= np.uint64(mask)
    x *= np.uint64(10000 << 32 | 1)
    x >>= np.uint64(32)
    return x


def fixed_width_values(block: memoryview, per_row: int) -> np.ndarray | None:
    """(rows, per_row) float64 of whole lines written as fixed-width `d.dddddddd...e±dd` tokens (numpy savetxt's
    `%.18e`), converted with whole-column integer arithmetic; None if the block has any other layout.

    Uses the first 9 significant digits (|error| < 1e-8 for values <= 1): a value whose x*255 lies within
    1e-5 of a rounding tie is re-read exactly with float(), so round(x*255) equals a full-precision parse.
    The digits past the ninth are therefore not checked one by one; the layout (separators, '.', 'e',
    exponent sign and digits, row length) is checked for every token."""
    line = bytes(block[:1 << 17]).find(b"\n") + 1  # tokens of up to 166 characters
    if line == 0 or line % per_row or len(block) % line:
        return None
    width = line // per_row  # token plus its separator
    first = bytes(block[:width - 1])
    e = first.find(b"e")
    # "d." then at least 8 digits, and exactly two exponent digits (savetxt writes three only past 1e99);
    # the exponent's 'e', sign and digits are checked for every token below.
    if first[1:2] != b"." or e < 10 or width - 1 != e + 4:
        return None
    tok = np.frombuffer(block, np.uint8).reshape(-1, width)  # (rows * per_row, width), a view
    sep = tok[:, -1].reshape(-1, per_row)
    lead = tok[:, :2].view("<u2").ravel() ^ np.uint16(0x2E30)  # "d.": the digit's value, and 0 for '.' above it
    fraction = _eight_digits(tok[:, 2:10])
    if fraction is None or lead.max() > 9 or not ((sep[:, :-1] == 32).all() and (sep[:, -1] == 10).all()):
        return None
    # The exponent field "e±dd" as one uint32, hashed to its slot: a field that is not exactly 'e', a sign
    # and two digits is not the key its slot belongs to.
    field = tok[:, e:e + 4].view("<u4").ravel()
    slot = field * _EXP_MULTIPLIER
    slot >>= np.uint32(16)
    if not np.array_equal(np.take(_EXP_OWNER, slot, mode="clip"), field):  # clip: no bounds checks
        return None
    mantissa = fraction + lead * np.uint64(10**8)  # nine digits: exact as an int64, and in float64
    values = mantissa.view(np.int64) * np.take(_EXP_POWERS, slot, mode="clip")
    off_grid = values * 255  # |x*255 - round(x*255)| <= 1/2, computed in place; near 1/2: near a tie
    off_grid -= np.rint(off_grid)
    np.abs(off_grid, out=off_grid)
    for i in np.flatnonzero(off_grid > 0.5 - 1e-5):  # near a tie: rare
        values[i] = float(bytes(block[i * width:(i + 1) * width - 1]))
    return values.reshape(-1, per_row)
