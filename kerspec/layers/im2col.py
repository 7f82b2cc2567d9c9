"""The arithmetic of a convolution as GEMMs: im2col forward, kernel gradient, col2im backward.

The forward pass is im2col: the padded input's windows (a strided view, `window_view`) are
copied into a `(groups, positions, window)` matrix and multiplied by the kernel in a batched
GEMM (`forward_gemm`; with short windows the bias rides in it as a column of ones). The kernel
gradient is that matrix's transpose times the output gradient, and the input gradient is the
matching col2im: a GEMM to window gradients, then one strided add per kernel offset (kh * kw
of them), never a loop over positions or samples; a plain 1-D convolution with fewer filters
than channels takes it as one GEMM instead (`dx_from_dz_windows`).

Both passes go through the batch in blocks of a few samples (CHUNK_BYTES, BACKWARD_CHUNK_BYTES),
so that what a GEMM writes is still in cache when the next step reads it. Training does not keep
the whole batch's columns (nine times the input for a 3x3 kernel, per convolution) for the
kernel gradient: the forward pass unfolds a block into a small buffer and multiplies it, and
`backward` unfolds it again and takes, block by block, the kernel gradient (summed over the
blocks) and the input gradient. A large batch's columns written whole leave the cache before
their GEMM reads them, and again before the kernel gradient does, which costs about what
unfolding twice does; and they would be most of training's memory. Only columns small enough
to stay in cache are kept from forward to backward (KEEP_COLUMNS_BYTES). The block buffers are
scratch shared by every convolution of the plan.

Everything here is channels_last, with the sizes of one call in a `Geometry`. When the output
goes to a pooling over non-overlapping windows (`blocks`, graph/fusions.py), the GEMM rows are
ordered by window offset first (`to_blocks`), so that the pooling reads contiguous blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kerspec.layers.windows import Pads, interior, offset_region, to_blocks, windows

# The forward pass unfolds the columns of at most this many bytes at a time (at least one
# sample): a block small enough to stay in cache between being written and being read by its
# GEMM, still hundreds of rows for the GEMM.
CHUNK_BYTES = 1 << 20
# The backward pass unfolds the columns again, and makes the window gradients (one GEMM) and adds
# them back (col2im), in blocks of about this many bytes, which also bounds their buffers.
BACKWARD_CHUNK_BYTES = 4 << 20
# Training keeps the batch's columns from the forward pass to the backward pass when they take
# at most this many bytes: small enough to stay in cache, where unfolding them again costs more
# than reading them back.
KEEP_COLUMNS_BYTES = 8 << 20
# Windows of at most this many values (kernel positions times input channels per group) take the
# bias into the GEMM as a column of ones.
FUSED_BIAS_MAX_DEPTH = 64


@dataclass(frozen=True)
class Geometry:
    """The sizes of one convolution call, channels_last, as its GEMMs see them."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: Pads
    spatial: tuple[int, ...]
    out: tuple[int, ...]
    # The pooling windows the output is written split into (see `convolve`), or None.
    blocks: tuple[int, ...] | None
    # The output positions computed (all of them, or those in whole windows), and the shape
    # their rows take within a sample.
    span: tuple[int, ...]
    placed: tuple[int, ...]
    batch: int
    groups: int
    in_group: int
    out_group: int
    rows: int
    per_sample: int
    # Values in one window of one group, and the columns' width (one more with the bias in them).
    depth: int
    width: int
    fused_bias: bool
    offset_major: bool
    # Samples unfolded and multiplied at a time by the forward pass, and by the backward pass.
    chunk: int
    step: int

    @property
    def filters(self) -> int:
        return self.groups * self.out_group

    @property
    def n_offsets(self) -> int:
        return math.prod(self.kernel)


def geometry(xl: np.ndarray, sizes, pads: Pads, out, groups: int, filters: int, use_bias: bool,
             blocks: tuple[int, ...] | None) -> Geometry:
    """The sizes of a convolution of `filters` in `groups` with (kernel, strides, dilation)
    `sizes`, padded by `pads` to `out` positions, applied to the channels_last xl."""
    kernel, strides, dilation = sizes
    batch, spatial, channels = xl.shape[0], xl.shape[1:-1], xl.shape[-1]
    if blocks is None:
        span = placed = out
    else:
        inner = tuple(o // p for o, p in zip(out, blocks))
        span = tuple(i * p for i, p in zip(inner, blocks))
        placed = (*blocks, *inner)
    in_group, out_group = channels // groups, filters // groups
    rows, depth = batch * math.prod(span), math.prod(kernel) * in_group
    per_sample = rows // batch if batch else 0
    # With short windows the bias rides in the GEMM: the columns get a last column of ones and
    # the kernel a last row holding the bias, so no pass over the output adds it, and the kernel
    # gradient's last row is the bias gradient (no column sums over the output gradient). Long
    # windows add it after: there the extra column costs the GEMMs more (an odd leading
    # dimension) than the bias pass.
    fused_bias = use_bias and depth <= FUSED_BIAS_MAX_DEPTH
    # The forward (backward) pass goes about CHUNK_BYTES (BACKWARD_CHUNK_BYTES) of columns at a
    # time, so that each block is still in cache for its GEMMs and what follows them.
    sample_bytes = max(per_sample * depth * groups * xl.itemsize, 1)
    return Geometry(
        kernel=kernel, strides=strides, dilation=dilation, pads=pads, spatial=spatial, out=out,
        blocks=blocks, span=span, placed=placed, batch=batch, groups=groups,
        in_group=in_group, out_group=out_group, rows=rows, per_sample=per_sample,
        depth=depth, width=depth + 1 if fused_bias else depth, fused_bias=fused_bias,
        # The columns are stored offset-major when a window row is shorter than half an output
        # row (few input channels: the first layer on images): the unfolding then copies whole
        # output rows at a time instead of runs of kernel_w * channels values.
        offset_major=2 * kernel[-1] * in_group < placed[-1],
        chunk=max(1, min(batch, CHUNK_BYTES // sample_bytes)),
        step=max(1, min(batch, BACKWARD_CHUNK_BYTES // sample_bytes)),
    )  # fmt: skip


def window_view(grouped: np.ndarray, g: Geometry) -> np.ndarray:
    """The im2col view of the padded input (batch, *padded, groups, in_group): every window,
    (groups, batch, *placed, *kernel, in_group), the row-major order of the kernel's
    (*kernel, in_group) axes. No copy."""
    view = windows(grouped, g.kernel, g.strides, g.dilation)
    if g.blocks is not None:
        view = to_blocks(view, 1, g.blocks)
    n_placed, rank = len(g.placed), len(g.kernel)
    order = (
        n_placed + 1,
        0,
        *range(1, n_placed + 1),
        *range(n_placed + 3, n_placed + rank + 3),
        n_placed + 2,
    )
    return view.transpose(order)


def gemm_kernel(w, g: Geometry, dtype) -> np.ndarray:
    """The kernel as the GEMMs take it, (groups, width, out_group), the bias in its last row
    when the bias rides in the GEMM."""
    kernel = np.empty((g.groups, g.width, g.out_group), dtype)
    kernel[:, : g.depth] = w["kernel"].reshape(g.depth, g.groups, g.out_group).transpose(1, 0, 2)
    if g.fused_bias:
        kernel[:, g.depth] = w["bias"].reshape(g.groups, g.out_group)
    return kernel


def forward_gemm(views, kernel, bias, activation, g: Geometry, ctx):
    """The windows unfolded into columns and multiplied by the kernel, a block of samples at a
    time, then the bias and activation: (z, y, the batch's columns kept for backprop or None).

    The output lives in a buffer reused batch after batch: a fresh large array is new pages
    from the kernel every time, and touching them cost more than the GEMM. Only one block of
    columns exists at a time unless training keeps them all (KEEP_COLUMNS_BYTES); otherwise
    backprop unfolds them again, block by block."""
    zg = ctx.buffer("z", _by_group_shape(g), kernel.dtype)
    # Whether a backward pass will follow (training, a gradient check), not ctx.training.
    keep = ctx.record and g.rows * g.width * g.groups * kernel.itemsize <= KEEP_COLUMNS_BYTES
    kept = columns(ctx, g, g.batch, kernel.dtype, shared=False) if keep else None
    cols = kept if keep else columns(ctx, g, g.chunk, kernel.dtype)
    in_place = activation.elementwise and not activation.uses_input
    late_bias = bias is not None and not g.fused_bias
    # With one group z is zg's rows: each block gets its bias and activation (in place, as
    # backward needs only y) right after its GEMM.
    blockwise = in_place and g.groups == 1
    for start in range(0, g.batch, g.chunk):
        stop = min(start + g.chunk, g.batch)
        rows_in = slice(start * g.per_sample, stop * g.per_sample)
        part = unfold(cols, views, start, stop, g, start if keep else 0)
        np.matmul(part, kernel, out=zg[:, rows_in])
        if blockwise:
            block = zg[0, rows_in]
            if late_bias:
                block += bias
            activation.forward(block, out=block)
    # A view when groups == 1; otherwise the group outputs are interleaved into filters.
    z = zg.transpose(1, 0, 2).reshape(g.rows, g.filters)
    if blockwise:
        return z, z, kept
    if late_bias:
        z += bias
    y = activation.forward(z, out=z) if in_place else activation.forward(z)
    return z, y, kept


def columns(ctx, g: Geometry, samples: int, dtype, shared: bool = True) -> np.ndarray:
    """A buffer for the columns of `samples` samples, (groups, rows, width), stored as
    (groups, width, rows) when `offset_major`: the context's (a fresh array when ctx is None).

    A block's buffer is scratch, written whole before every GEMM that reads it, so every
    convolution of the plan shares it (`shared`); kept columns are the layer's own."""
    rows = samples * g.per_sample
    shape = (g.groups, g.width, rows) if g.offset_major else (g.groups, rows, g.width)
    if ctx is None:
        cols = np.empty(shape, dtype)
    else:
        cols = ctx.buffer("cols" if shared else "kept_cols", shape, dtype, shared=shared)
    return cols.transpose(0, 2, 1) if g.offset_major else cols


def unfold(cols: np.ndarray, views, start: int, stop: int, g: Geometry, at: int = 0):
    """The columns of samples start:stop written into `cols` from its sample `at` on, with the
    bias's column of ones when it rides in the GEMM (set every time: a block's buffer is
    shared)."""
    part = cols[:, at * g.per_sample : (at + stop - start) * g.per_sample]
    windows_at = part[..., : g.depth].reshape(
        g.groups, stop - start, *g.placed, *g.kernel, g.in_group
    )
    np.copyto(windows_at, views[:, start:stop])
    if g.fused_bias:
        part[..., g.depth] = 1
    return part


def dx_as_one_gemm(g: Geometry) -> bool:
    """A plain 1-D convolution with fewer filters than input channels takes its input gradient
    as one GEMM over the output gradient's windows (see dx_from_dz_windows): those windows are
    kernel * filters wide, the window gradients kernel * channels."""
    return (
        g.groups == 1 and g.blocks is None and g.strides == (1,) and g.dilation == (1,)
        and g.filters < g.in_group
    )  # fmt: skip


def backward_buffers(ctx, g: Geometry, dtype, kept) -> dict:
    """The backward pass's buffers, taken now (backprop runs when ctx.node names another
    layer) and only when a backward pass will follow; backprop makes fresh arrays otherwise.
    The input gradient is the layer's own; the rest is scratch for one block of samples,
    shared by every convolution (see `columns`). `kept`: the columns forward kept, or None."""
    if not ctx.record:
        return {}
    buffers = {"cols": columns(ctx, g, g.step, dtype)} if kept is None else {}
    if g.groups > 1:
        buffers["dzg"] = ctx.buffer("dzg", _by_group_shape(g), dtype, shared=True)
    if not ctx.need_dx:
        return buffers
    if dx_as_one_gemm(g):
        buffers["dx"] = ctx.buffer("dx", _input_shape(g), dtype)
        shape = _dz_windows_shape(g)
        buffers["dz_windows"] = ctx.buffer("dz_windows", shape, dtype, shared=True)
        return buffers
    buffers["dx"] = ctx.buffer("dx", _grouped_shape(g), dtype)
    buffers["dcols"] = ctx.buffer("dcols", _dcols_shape(g), dtype, shared=True)
    if g.blocks:
        buffers["dz_natural"] = ctx.buffer("dz_natural", _natural_shape(g), dtype, shared=True)
    return buffers


def _by_group_shape(g: Geometry) -> tuple[int, ...]:
    return (g.groups, g.rows, g.out_group)


def _input_shape(g: Geometry) -> tuple[int, ...]:
    return (g.batch, *g.spatial, g.groups * g.in_group)


def _grouped_shape(g: Geometry) -> tuple[int, ...]:
    padded = (n + lo + hi for n, (lo, hi) in zip(g.spatial, g.pads))
    return (g.batch, *padded, g.groups, g.in_group)


def _dz_windows_shape(g: Geometry) -> tuple[int, ...]:
    return (g.step, *g.spatial, g.n_offsets, g.filters)


def _dcols_shape(g: Geometry) -> tuple[int, ...]:
    return (g.n_offsets, g.groups, g.step * g.per_sample, g.in_group)


def _natural_shape(g: Geometry) -> tuple[int, ...]:
    return (g.groups, g.step * g.per_sample, g.out_group)


def backward(views, kept, dz, kernel, g: Geometry, buffers, need_dx: bool, use_bias: bool):
    """The input gradient (batch, *spatial, channels), None unless `need_dx`, and the kernel's
    (and bias's) gradients, from the output gradient dz (rows, filters).

    One pass over the batch, a block of samples at a time: the block's columns (unfolded
    again unless forward `kept` them) are multiplied by its output gradient into the kernel
    gradient, and the same output gradient rows go on to the block's input gradient while
    still in cache."""
    dtype = kernel.dtype
    # Contiguous per group for BLAS; no copy when groups == 1 (and dz is contiguous).
    by_group = dz.reshape(g.rows, g.groups, g.out_group).transpose(1, 0, 2)
    if g.groups == 1:
        dzg = np.ascontiguousarray(by_group)
    else:
        dzg = _or_empty(buffers.get("dzg"), _by_group_shape(g), dtype)
        np.copyto(dzg, by_group)
    cols = buffers.get("cols")
    if cols is None and kept is None:
        cols = columns(None, g, g.step, dtype)
    # Summed over the blocks: cols^T dz, (groups, width, out_group).
    dkernel = np.empty((g.groups, g.width, g.out_group), dtype)
    partial = np.empty_like(dkernel)
    dx, input_block = _input_gradient(kernel, g, buffers, dtype) if need_dx else (None, None)
    for start in range(0, g.batch, g.step):
        stop = min(start + g.step, g.batch)
        rows = slice(start * g.per_sample, stop * g.per_sample)
        part = unfold(cols, views, start, stop, g) if kept is None else kept[:, rows]
        dz_rows = dzg[:, rows]
        np.matmul(part.transpose(0, 2, 1), dz_rows, out=dkernel if start == 0 else partial)
        if start:
            dkernel += partial
        if need_dx:
            input_block(dz_rows, start, stop)
    kernel_shape = (*g.kernel, g.in_group, g.filters)
    grads = {"kernel": dkernel[:, : g.depth].transpose(1, 0, 2).reshape(kernel_shape)}
    if g.fused_bias:
        grads["bias"] = dkernel[:, g.depth].reshape(g.filters)
    elif use_bias:
        # A GEMV with ones, several times faster than dz.sum(axis=0) down the rows.
        grads["bias"] = np.ones(g.rows, dtype) @ dz
    return dx, grads


def _input_gradient(kernel, g: Geometry, buffers, dtype):
    """The input gradient's array (batch, *spatial, channels), and the function that fills
    samples start:stop of it from their output gradient rows (groups, rows, out_group)."""
    if dx_as_one_gemm(g):
        dx = _or_empty(buffers.get("dx"), _input_shape(g), dtype)
        dz_windows = _or_empty(buffers.get("dz_windows"), _dz_windows_shape(g), dtype)
        flipped = flipped_kernel(kernel[0, : g.depth].reshape(*g.kernel, g.in_group, g.filters))

        def direct(dz_rows, start, stop):
            dz_block = dz_rows[0].reshape(stop - start, *g.out, g.filters)
            dx_from_dz_windows(
                dz_block, flipped, g.pads[0][0], dz_windows[: stop - start], dx[start:stop]
            )

        return dx, direct
    dxp = _or_empty(buffers.get("dx"), _grouped_shape(g), dtype)
    block = col2im(kernel, g, buffers, dxp, dtype)
    return dxp[interior(g.pads, g.spatial)].reshape(_input_shape(g)), block


def col2im(kernel, g: Geometry, buffers, dxp, dtype):
    """The function that writes samples start:stop of the padded input's gradient dxp (batch,
    *padded, groups, in_group) from their output gradient rows: a GEMM to the window
    gradients, then one strided add per kernel offset, while the window gradients are still in
    cache.

    The window gradients are made one kernel offset at a time, (offsets, groups, rows,
    in_group), with the rows in natural position order: each offset's block is then contiguous,
    and so is each output row of its region in dx, and the adds run along whole rows (span_w x
    in_group values) instead of one in_group-value run a position."""
    kernel_by_offset = np.ascontiguousarray(
        kernel[:, : g.depth]
        .reshape(g.groups, g.n_offsets, g.in_group, g.out_group)
        .transpose(1, 0, 3, 2)
    )
    dcols_all = _or_empty(buffers.get("dcols"), _dcols_shape(g), dtype)
    naturals = buffers.get("dz_natural")
    if g.blocks is not None and naturals is None:
        naturals = np.empty(_natural_shape(g), dtype)
    regions = [
        offset_region(offset, g.strides, g.dilation, g.span) for offset in np.ndindex(*g.kernel)
    ]
    # Offset 0 covers the box [0, span) of every axis when strides and dilation are 1: copy it
    # there and zero only the rest, instead of zeroing everything and adding it.
    boxed = max(g.strides) == 1 and max(g.dilation) == 1

    def block(dz_rows, start, stop):
        n_rows = (stop - start) * g.per_sample
        if g.blocks is not None:
            # From the window-split order (batch, *blocks, *inner) back to natural order.
            natural = naturals[:, :n_rows]
            natural_at = natural.reshape(g.groups, stop - start, *g.span, g.out_group)
            np.copyto(
                to_blocks(natural_at, 2, g.blocks),
                dz_rows.reshape(g.groups, stop - start, *g.placed, g.out_group),
            )
            dz_rows = natural
        dcols = np.matmul(dz_rows, kernel_by_offset, out=dcols_all[:, :, :n_rows])
        dcols = dcols.reshape(g.n_offsets, g.groups, stop - start, *g.span, g.in_group)
        _add_back(dxp[start:stop], dcols, regions, g.span, boxed)

    return block


def _add_back(block, dcols, regions, span, boxed: bool) -> None:
    """Every kernel offset's window gradients added into its region of `block` (col2im)."""
    if boxed:
        for axis, size in enumerate(span, start=1):
            box = tuple(slice(0, m) for m in span[: axis - 1])
            block[(slice(None), *box, slice(size, None))] = 0
        np.copyto(block[regions[0]], np.moveaxis(dcols[0], 0, -2))
    else:
        block.fill(0)
    for index in range(1 if boxed else 0, len(regions)):
        target = block[regions[index]]
        target += np.moveaxis(dcols[index], 0, -2)


def _or_empty(buffer, shape, dtype) -> np.ndarray:
    return buffer if buffer is not None else np.empty(shape, dtype)


def flipped_kernel(kernel: np.ndarray) -> np.ndarray:
    """A 1-D kernel (k, channels, filters) as dx_from_dz_windows takes it: flipped along its
    steps, (k * filters, channels)."""
    k, channels, filters = kernel.shape
    return np.ascontiguousarray(kernel[::-1].transpose(0, 2, 1)).reshape(k * filters, channels)


def dx_from_dz_windows(dz, flipped, before: int, dz_windows, dx) -> None:
    """The input gradient of a 1-D convolution with strides and dilation 1 as one GEMM, into
    dx: input step s gets sum_j dz[s - j + before] @ kernel[j].T, so with u = k - 1 - j it is
    the windows of dz (rows s + u - (k - 1) + before, zero outside dz) times the kernel flipped
    along its steps (`flipped_kernel`). The windows are copied one offset at a time from dz
    itself into dz_windows, no padded copy.

    dz (batch, out_steps, filters), dz_windows (batch, steps, k, filters) -> dx (batch, steps,
    channels).
    """
    batch, out_steps, filters = dz.shape
    steps, k = dz_windows.shape[1:3]
    for u in range(k):
        shift = u - (k - 1) + before
        lo = max(0, -shift)
        hi = max(lo, min(steps, out_steps - shift))
        dz_windows[:, lo:hi, u] = dz[:, lo + shift : hi + shift]
        dz_windows[:, :lo, u] = 0
        dz_windows[:, hi:, u] = 0
    np.matmul(
        dz_windows.reshape(batch * steps, k * filters), flipped, out=dx.reshape(-1, dx.shape[-1])
    )
