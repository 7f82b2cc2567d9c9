"""The arithmetic of a convolution as GEMMs: im2col forward, kernel gradient, col2im backward.

The forward pass is im2col: the padded input's windows (a strided view, `window_view`) are
copied once into a `(groups, positions, window)` matrix and multiplied by the kernel in a batched
GEMM (`forward_gemm`; with short windows the bias rides in it as a column of ones). The kernel
gradient is that matrix's transpose times the output gradient (one GEMM, `kernel_gradient`), and
the input gradient is the matching col2im (`input_gradient`): a GEMM to window gradients, then
one strided add per kernel offset (kh * kw of them), never a loop over positions or samples; a
plain 1-D convolution with fewer filters than channels takes it as one GEMM instead
(`dx_from_dz_windows`). Both go through the batch in blocks of a few samples (CHUNK_BYTES,
DX_CHUNK_BYTES) so that what a GEMM writes is still in cache when the next step reads it.

Training unfolds the whole batch into a buffer reused batch after batch and keeps it for the
kernel gradient; its backward writes into buffers too. Inference (ctx.record False: predict,
evaluate, no backward follows) keeps one block of columns and none afterwards, so a large
predict batch does not hold a column array nine times the size of its input.

Everything here is channels_last, with the sizes of one call in a `Geometry`. When the output
goes to a pooling over non-overlapping windows (`blocks`, graph/fusions.py), the GEMM rows are
ordered by window offset first (`to_blocks`), so that the pooling reads contiguous blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kerspec.layers.windows import Pads, offset_region, to_blocks, windows

# The forward pass unfolds the columns of at most this many bytes at a time (at least one
# sample): a block small enough to stay in cache between being written and being read by its
# GEMM, still hundreds of rows for the GEMM.
CHUNK_BYTES = 1 << 20
# The input gradient's window gradients are made (one GEMM) and added back (col2im) in blocks of
# about this many bytes, which also bounds their buffer.
DX_CHUNK_BYTES = 4 << 20
# Windows of at most this many values (kernel positions times input channels per group) take the
# bias into the GEMM as a column of ones.
FUSED_BIAS_MAX_DEPTH = 64


def column_buffer(ctx, groups: int, rows: int, width: int, dtype, offset_major: bool):
    """A (groups, rows, width) column array: the context's buffer (a fresh array when ctx is
    None), stored as (groups, width, rows) when `offset_major`."""
    shape = (groups, width, rows) if offset_major else (groups, rows, width)
    cols = np.empty(shape, dtype) if ctx is None else ctx.buffer("cols", shape, dtype)
    return cols.transpose(0, 2, 1) if offset_major else cols


def unfold_buffer(cols: np.ndarray, depth: int) -> np.ndarray:
    """cols (groups, rows, width) with its column `depth` (the bias's ones, when width > depth)
    set to 1; the columns before it receive the windows."""
    if cols.shape[-1] > depth:
        cols[..., depth] = 1
    return cols


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
    # Samples unfolded and multiplied (forward), or turned into the input gradient, at a time.
    chunk: int
    dx_step: int

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
    # Both passes go about CHUNK_BYTES (DX_CHUNK_BYTES) of columns at a time, so that each block
    # is still in cache for its GEMM and what follows it.
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
        dx_step=max(1, min(batch, DX_CHUNK_BYTES // sample_bytes)),
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
    time, then the bias and activation: (z, y, the whole batch's columns or None).

    The output and the columns live in buffers reused batch after batch: a fresh large array
    is new pages from the kernel every time, and touching them cost more than the GEMM.
    Training keeps the whole batch's columns for the kernel gradient; inference (predict,
    evaluate) keeps one block of them, so a large batch does not hold its whole column array
    (backprop, if a caller asks for it in inference, unfolds them again)."""
    # Whether a backward pass will follow (training, a gradient check), not ctx.training.
    training = ctx.record
    zg = ctx.buffer("z", (g.groups, g.rows, g.out_group), kernel.dtype)
    rows = g.rows if training else g.chunk * g.per_sample
    cols = column_buffer(ctx, g.groups, rows, g.width, kernel.dtype, g.offset_major)
    cols = unfold_buffer(cols, g.depth)
    in_place = activation.elementwise and not activation.uses_input
    late_bias = bias is not None and not g.fused_bias
    # With one group z is zg's rows: each block gets its bias and activation (in place, as
    # backward needs only y) right after its GEMM.
    blockwise = in_place and g.groups == 1
    for start in range(0, g.batch, g.chunk):
        stop = min(start + g.chunk, g.batch)
        rows_in = slice(start * g.per_sample, stop * g.per_sample)
        part = cols[:, rows_in] if training else cols[:, : (stop - start) * g.per_sample]
        np.copyto(
            part[..., : g.depth].reshape(g.groups, stop - start, *g.placed, *g.kernel, g.in_group),
            views[:, start:stop],
        )
        np.matmul(part, kernel, out=zg[:, rows_in])
        if blockwise:
            block = zg[0, rows_in]
            if late_bias:
                block += bias
            activation.forward(block, out=block)
    kept_cols = cols if training or g.chunk >= g.batch else None
    # A view when groups == 1; otherwise the group outputs are interleaved into filters.
    z = zg.transpose(1, 0, 2).reshape(g.rows, g.filters)
    if blockwise:
        return z, z, kept_cols
    if late_bias:
        z += bias
    y = activation.forward(z, out=z) if in_place else activation.forward(z)
    return z, y, kept_cols


def all_columns(views, g: Geometry, dtype) -> np.ndarray:
    """The whole batch's columns in a fresh array (for a backward after inference)."""
    cols = column_buffer(None, g.groups, g.rows, g.width, dtype, g.offset_major)
    cols = unfold_buffer(cols, g.depth)
    windows_at = cols[..., : g.depth].reshape(g.groups, g.batch, *g.placed, *g.kernel, g.in_group)
    np.copyto(windows_at, views)
    return cols


def kernel_gradient(cols, dzg, dz, g: Geometry, kernel_shape, use_bias: bool) -> dict:
    """The kernel's (and bias's) gradient: the columns' transpose times the output gradient."""
    # The long-K product with the columns in their contiguous layout, which OpenBLAS runs
    # faster: (dz^T cols)^T row-major, cols^T dz offset-major.
    if g.offset_major:
        dkernel = np.matmul(cols.transpose(0, 2, 1), dzg)
    else:
        dkernel = np.matmul(dzg.transpose(0, 2, 1), cols).transpose(0, 2, 1)
    grads = {"kernel": dkernel[:, : g.depth].transpose(1, 0, 2).reshape(kernel_shape)}
    if g.fused_bias:
        grads["bias"] = dkernel[:, g.depth].reshape(g.filters)
    elif use_bias:
        # A GEMV with ones, several times faster than dz.sum(axis=0) down the rows.
        grads["bias"] = np.ones(g.rows, dz.dtype) @ dz
    return grads


def dx_as_one_gemm(g: Geometry) -> bool:
    """A plain 1-D convolution with fewer filters than input channels takes its input gradient
    as one GEMM over the output gradient's windows (see dx_from_dz_windows): those windows are
    kernel * filters wide, the window gradients kernel * channels."""
    return (
        g.groups == 1 and g.blocks is None and g.strides == (1,) and g.dilation == (1,)
        and g.filters < g.in_group
    )  # fmt: skip


def dx_buffers(ctx, g: Geometry, x_shape, grouped_shape, direct: bool, dtype) -> dict:
    """The input gradient's buffers, taken now (backprop runs when ctx.node names another
    layer) and only when a backward pass will follow; backprop makes fresh arrays otherwise."""
    if not (ctx.need_dx and ctx.record):
        return {}
    if direct:
        return {
            "dz_windows": ctx.buffer(
                "dz_windows", (g.batch, *g.spatial, g.n_offsets, g.filters), dtype
            ),
            "dx": ctx.buffer("dx", x_shape, dtype),
        }
    buffers = {
        "dcols": ctx.buffer("dcols", _dcols_shape(g), dtype),
        "dx": ctx.buffer("dx", grouped_shape, dtype),
    }
    if g.blocks:
        buffers["dz_natural"] = ctx.buffer("dz_natural", _natural_shape(g), dtype)
    return buffers


def _dcols_shape(g: Geometry) -> tuple[int, ...]:
    return (g.n_offsets, g.groups, g.dx_step * g.per_sample, g.in_group)


def _natural_shape(g: Geometry) -> tuple[int, ...]:
    return (g.groups, g.dx_step * g.per_sample, g.out_group)


def input_gradient(dzg, kernel, g: Geometry, buffers, grouped_shape, dtype) -> np.ndarray:
    """The padded input's gradient, (batch, *padded, groups, in_group), as col2im: a few samples
    at a time, a GEMM to the window gradients, then one strided add per kernel offset, while
    the block's window gradients are still in cache.

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
    dxp = _or_empty(buffers.get("dx"), grouped_shape, dtype)
    regions = [
        offset_region(offset, g.strides, g.dilation, g.span) for offset in np.ndindex(*g.kernel)
    ]
    # Offset 0 covers the box [0, span) of every axis when strides and dilation are 1: copy it
    # there and zero only the rest, instead of zeroing everything and adding it.
    boxed = max(g.strides) == 1 and max(g.dilation) == 1
    for start in range(0, g.batch, g.dx_step):
        stop = min(start + g.dx_step, g.batch)
        n_rows = (stop - start) * g.per_sample
        dz_rows = dzg[:, start * g.per_sample : stop * g.per_sample]
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
    return dxp


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


def dx_from_dz_windows(dz, kernel, before: int, steps: int, windows=None, dx=None):
    """The input gradient of a 1-D convolution with strides and dilation 1 as one GEMM: input
    step s gets sum_j dz[s - j + before] @ kernel[j].T, so with u = k - 1 - j it is the
    windows of dz (rows s + u - (k - 1) + before, zero outside dz) times the kernel flipped
    along its steps. The windows are copied one offset at a time from dz itself, no padded copy.

    dz (batch, out_steps, filters), kernel (k, channels, filters) -> dx (batch, steps, channels).
    """
    batch, out_steps, filters = dz.shape
    k, channels, _ = kernel.shape
    if windows is None:
        windows = np.empty((batch, steps, k, filters), dz.dtype)
    if dx is None:
        dx = np.empty((batch, steps, channels), dz.dtype)
    for u in range(k):
        shift = u - (k - 1) + before
        lo = max(0, -shift)
        hi = max(lo, min(steps, out_steps - shift))
        windows[:, lo:hi, u] = dz[:, lo + shift : hi + shift]
        windows[:, :lo, u] = 0
        windows[:, hi:, u] = 0
    flipped = np.ascontiguousarray(kernel[::-1].transpose(0, 2, 1)).reshape(k * filters, channels)
    np.matmul(windows.reshape(batch * steps, k * filters), flipped, out=dx.reshape(-1, channels))
    return dx
