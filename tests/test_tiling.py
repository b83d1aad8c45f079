"""DMA tiling descriptors mean what the ADF documentation says: tiles in dimension-0-fastest order,
traversal innermost first, zeros outside the boundary, writes that land where reads came from."""

from __future__ import annotations

import numpy as np

from aieflow.tiling import Tiling, Traversal, read_tiles, write_tiles


def test_blocked_read_matches_numpy_reshape():
    rows, cols, m, k = 8, 16, 4, 8
    buf = np.arange(rows * cols)  # row-major [rows][cols]: dimension 0 is the column
    t = Tiling((cols, rows), (k, m), (0, 0), (Traversal(0, k, cols // k), Traversal(1, m, rows // m)))
    want = buf.reshape(rows // m, m, cols // k, k).transpose(0, 2, 1, 3).ravel()
    assert np.array_equal(read_tiles(buf, t), want)


def test_offset_and_zero_padding_outside_the_boundary():
    buf = np.arange(1, 3 * 5 + 1)  # 3 rows of 5 values
    t = Tiling((5, 3), (4, 4), (4, 0), (), boundary_dimension=(5, 3))
    got = read_tiles(buf, t).reshape(4, 4)
    assert got[0].tolist() == [5, 0, 0, 0] and got[2].tolist() == [15, 0, 0, 0] and not got[3].any()


def test_write_inverts_read():
    rng = np.random.default_rng(0)
    cols, rows, n, m = 24, 8, 8, 4
    t = Tiling((cols, rows), (n, m), (8, 0), (Traversal(0, n, 2), Traversal(1, m, 2)))
    src = rng.integers(-100, 100, cols * rows)
    dst = np.zeros_like(src)
    write_tiles(dst, t, read_tiles(src, t))
    view = dst.reshape(rows, cols)
    assert np.array_equal(view[:, 8:24], src.reshape(rows, cols)[:, 8:24]) and not view[:, :8].any()
    assert t.elements == 8 * 4 * 4
