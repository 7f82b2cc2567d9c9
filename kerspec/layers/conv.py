"""Convolutions: Conv1D and Conv2D, and the window helpers that pooling shares.

The forward pass is im2col: the padded input's windows (a strided view) are copied once into a
`(groups, positions, window)` matrix and multiplied by the kernel in a batched GEMM (with short
windows the bias rides in it as a column of ones). The kernel gradient is that matrix's transpose
times the output gradient (one GEMM), and the input gradient is the matching col2im: a GEMM to
window gradients, then one strided add per kernel offset (kh * kw of them), never a loop over
positions or samples. Both go through the batch in blocks of a few samples (CHUNK_BYTES,
DX_CHUNK_BYTES) so that what a GEMM writes is still in cache when the next step reads it.

Training unfolds the whole batch into a buffer reused batch after batch and keeps it for the
kernel gradient; its backward writes into buffers too. Inference (ctx.record False: predict,
evaluate, no backward follows) keeps one block of columns and none afterwards, so a large
predict batch does not hold a column array nine times the size of its input.

Arrays are handled channels_last inside; a channels_first input is moved there as a view.
When the plan hands the output to a pooling over non-overlapping windows, the GEMM rows are
ordered by window offset first (`to_blocks`), so that the pooling reads contiguous blocks.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BeforeValidator, PositiveInt, PrivateAttr, model_validator

from kerspec.layers.base import LAYERS, ShapeError, format_shape, require_known
from kerspec.layers.core import DataFormat, KernelBiasLayer

Pads = list[tuple[int, int]]

# Inference unfolds the columns of at most this many bytes at a time (at least one sample): a
# block small enough to stay in cache between being written and being read by its GEMM, still
# hundreds of rows for the GEMM (W2 predict at batch 1,024: conv2 83-86 ms at 16 MiB, 61 ms at
# 1 MiB; conv1 49 -> 37 ms).
CHUNK_BYTES = 1 << 20
# The input gradient's window gradients are made (one GEMM) and added back (col2im) in blocks of
# about this many bytes, which also bounds their buffer (W2 conv2 forward + backward, batch 128:
# 14.0-14.1 ms at 2-4 MiB, 14.7 at 1 MiB and whole, 15 MiB).
DX_CHUNK_BYTES = 4 << 20
# Windows of at most this many values (kernel positions times input channels per group) take the
# bias into the GEMM as a column of ones.
FUSED_BIAS_MAX_DEPTH = 64


def _lower(value):
    # Keras reads padding names case-insensitively ("SAME" works there too).
    return value.lower() if isinstance(value, str) else value


Padding = Annotated[Literal["valid", "same"], BeforeValidator(_lower)]
CausalPadding = Annotated[Literal["valid", "same", "causal"], BeforeValidator(_lower)]
Sizes = PositiveInt | list[PositiveInt]


def as_tuple(value: int | list[int], rank: int) -> tuple[int, ...]:
    return (value,) * rank if isinstance(value, int) else tuple(value)


def check_lengths(layer, rank: int, *fields: str) -> None:
    """Keras accepts an int or one entry per spatial dimension for each size argument."""
    for field in fields:
        value = getattr(layer, field)
        if isinstance(value, list) and len(value) != rank:
            raise ValueError(
                f"{field} must be an integer or a list of {rank} integers; received {value}"
            )


def split_channels(layer, shape, rank: int, layout: str):
    """(spatial dims, channels) of a shape without batch; ShapeError on the wrong rank."""
    if len(shape) != rank + 1:
        raise ShapeError(
            f"{layer.type} expects inputs of rank {rank + 2}, {layout}; "
            f"received {format_shape(shape)}"
        )
    if layer.data_format == "channels_first":
        return tuple(shape[1:]), shape[0]
    return tuple(shape[:-1]), shape[-1]


def join_channels(layer, spatial, channels):
    if layer.data_format == "channels_first":
        return (channels, *spatial)
    return (*spatial, channels)


def to_last(layer, x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1) if layer.data_format == "channels_first" else x


def from_last(layer, y: np.ndarray) -> np.ndarray:
    return np.moveaxis(y, -1, 1) if layer.data_format == "channels_first" else y


def pad_amounts(padding: str, spatial, kernel, strides, dilation) -> Pads:
    """(before, after) per spatial dimension. `same` splits as TensorFlow does: the odd extra
    value goes after; `causal` pads only before, so no output sees a later step."""
    pads = []
    for n, k, s, d in zip(spatial, kernel, strides, dilation):
        extent = (k - 1) * d + 1
        if padding == "valid":
            pads.append((0, 0))
        elif padding == "causal":
            pads.append((extent - 1, 0))
        else:
            total = max((-(-n // s) - 1) * s + extent - n, 0)
            pads.append((total // 2, total - total // 2))
    return pads


def out_sizes(layer, spatial, pads: Pads, kernel, strides, dilation) -> tuple[int | None, ...]:
    """Output length per dimension, floor((n + pads - dilated kernel) / stride) + 1 as Keras;
    None stays None. A window larger than the padded input is a ShapeError."""
    sizes = []
    for n, (lo, hi), k, s, d in zip(spatial, pads, kernel, strides, dilation):
        if n is None:
            sizes.append(None)
            continue
        extent = (k - 1) * d + 1
        if n + lo + hi < extent:
            raise ShapeError(
                f"the window ({extent}, from size {k} and dilation {d}) is larger "
                f"than the padded input length {n + lo + hi} (input {n}, padding {layer.padding})"
            )
        sizes.append((n + lo + hi - extent) // s + 1)
    return tuple(sizes)


def padded(x: np.ndarray, pads: Pads, fill: float, ctx, name: str, shared: bool = False) -> np.ndarray:
    """x (batch, *spatial, ...) with its spatial axes padded by `fill`; x itself without padding.
    `shared`: in the context's buffer that every layer shares (see Context.buffer)."""
    if not any(lo or hi for lo, hi in pads):
        return x
    shape = (
        x.shape[0],
        *(n + lo + hi for n, (lo, hi) in zip(x.shape[1:], pads)),
        *x.shape[1 + len(pads) :],
    )
    xp = ctx.buffer(name, shape, x.dtype, shared=shared)
    xp.fill(fill)
    xp[interior(pads, x.shape[1:])] = x
    return xp


def interior(pads: Pads, spatial) -> tuple:
    return (slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial)), Ellipsis)


def windows(xp: np.ndarray, kernel, strides, dilation) -> np.ndarray:
    """A view (batch, *out, ..., *kernel) of every window of xp (batch, *spatial, ...)."""
    rank = len(kernel)
    extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    view = sliding_window_view(xp, extents, axis=tuple(range(1, rank + 1)))
    steps = (slice(None), *(slice(None, None, s) for s in strides))
    middle = (slice(None),) * (xp.ndim - rank - 1)
    return view[(*steps, *middle, *(slice(None, None, d) for d in dilation))]


def offset_region(offset, strides, dilation, out) -> tuple:
    """The slice of the padded input that kernel offset `offset` reads at every output position."""
    return (
        slice(None),
        *(
            slice(k * d, k * d + s * (o - 1) + 1, s)
            for k, s, d, o in zip(offset, strides, dilation, out)
        ),
        Ellipsis,
    )


def to_blocks(a: np.ndarray, axis: int, pool) -> np.ndarray:
    """A view of a, whose spatial axes start at `axis`, split into non-overlapping windows of
    `pool` (an odd edge left out) with the window offsets first: (..., *n) -> (..., *pool,
    *(n // pool), ...). Position (i * p + k) of an axis is [k, i] of the view."""
    rank = len(pool)
    sizes, strides = a.shape[axis : axis + rank], a.strides[axis : axis + rank]
    return np.lib.stride_tricks.as_strided(
        a,
        (*a.shape[:axis], *pool, *(n // p for n, p in zip(sizes, pool)), *a.shape[axis + rank :]),
        (*a.strides[:axis], *strides, *(s * p for s, p in zip(strides, pool)),
         *a.strides[axis + rank :]),
    )


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


class BaseConv(KernelBiasLayer):
    """Shared arguments and math of Conv1D and Conv2D."""

    rank: ClassVar[int]
    layout: ClassVar[str]

    filters: PositiveInt
    kernel_size: Sizes
    strides: Sizes = 1
    data_format: DataFormat | None = None
    dilation_rate: Sizes = 1
    groups: PositiveInt = 1

    # Set only on the plan's copy of a convolution whose output nothing but a pooling over
    # non-overlapping windows reads (graph/plan.py): the pooling window. The layer then
    # computes only the positions inside whole windows and writes them as (batch, *pool,
    # *(out // pool), filters), so that each window offset is one contiguous block for the
    # pooling's passes.
    _pool_blocks: tuple[int, ...] | None = PrivateAttr(None)

    def writing_blocks(self, pool: tuple[int, ...]) -> BaseConv | None:
        if self.data_format == "channels_first" or len(pool) != self.rank:
            return None
        copy = self.model_copy()
        copy._pool_blocks = pool
        return copy

    @model_validator(mode="after")
    def _check_sizes(self):
        check_lengths(self, self.rank, "kernel_size", "strides", "dilation_rate")
        strides, dilation = self._sizes()[1:]
        if max(strides) > 1 and max(dilation) > 1:
            raise ValueError(
                "strides > 1 cannot be combined with dilation_rate > 1 (as in Keras); "
                f"received strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        return self

    def _sizes(self):
        return (
            as_tuple(self.kernel_size, self.rank),
            as_tuple(self.strides, self.rank),
            as_tuple(self.dilation_rate, self.rank),
        )

    def _channels(self, shape) -> tuple[tuple, int]:
        spatial, channels = split_channels(self, shape, self.rank, self.layout)
        require_known((channels,), "the channel dimension")
        if self.filters % self.groups:
            raise ShapeError(
                f"filters ({self.filters}) must be divisible by groups ({self.groups})"
            )
        if channels % self.groups:
            raise ShapeError(
                f"the input channels ({channels}) must be divisible by groups "
                f"({self.groups}); received {format_shape(shape)}"
            )
        return spatial, channels

    def output_shape(self, shape):
        spatial, _ = self._channels(shape)
        kernel, strides, dilation = self._sizes()
        pads = pad_amounts(self.padding, spatial, kernel, strides, dilation)
        return join_channels(
            self, out_sizes(self, spatial, pads, kernel, strides, dilation), self.filters
        )

    def weight_specs(self, shape):
        _, channels = self._channels(shape)
        kernel = self._sizes()[0]
        return self.kernel_and_bias((*kernel, channels // self.groups, self.filters), self.filters)

    def call(self, w, x, ctx):
        rank, groups, filters = self.rank, self.groups, self.filters
        kernel_size, strides, dilation = self._sizes()
        xl = to_last(self, x)
        batch, spatial, channels = xl.shape[0], xl.shape[1:-1], xl.shape[-1]
        pads = pad_amounts(self.padding, spatial, kernel_size, strides, dilation)
        out = out_sizes(self, spatial, pads, kernel_size, strides, dilation)
        blocks = self._pool_blocks
        # The output positions computed (`span`: all of them, or those in whole pooling
        # windows), and the shape their rows take within a sample.
        if blocks is None:
            span = placed = out
        else:
            inner = tuple(o // p for o, p in zip(out, blocks))
            span = tuple(i * p for i, p in zip(inner, blocks))
            placed = (*blocks, *inner)

        def at_positions(a: np.ndarray) -> np.ndarray:
            """a, whose axes from 1 on are the output positions (those past `span` left
            out), in the rows' order."""
            return a if blocks is None else to_blocks(a, 1, blocks)

        in_group, out_group = channels // groups, filters // groups
        rows, depth = batch * math.prod(span), math.prod(kernel_size) * in_group

        # Inference reads the padded input only inside this call (no backward follows): one
        # buffer serves every convolution of the plan (R4 at batch 1,024: 7 x 126 MB -> 126 MB).
        xp = padded(xl, pads, 0.0, ctx, "padded", shared=not ctx.record)
        grouped = xp.reshape(*xp.shape[:-1], groups, in_group)
        # (batch, *placed, groups, in_group, *kernel) -> (groups, batch, *placed, *kernel,
        # in_group), the row-major order of the kernel's (*kernel, in_group) axes.
        n_placed = len(placed)
        order = (
            n_placed + 1,
            0,
            *range(1, n_placed + 1),
            *range(n_placed + 3, n_placed + rank + 3),
            n_placed + 2,
        )
        views = at_positions(windows(grouped, kernel_size, strides, dilation)).transpose(order)
        # With short windows the bias rides in the GEMM: the columns get a last column of ones
        # and the kernel a last row holding the bias, so no pass over the output adds it, and the
        # kernel gradient's last row is the bias gradient (no column sums over the output
        # gradient). Long windows add it after: there the extra column costs the GEMMs more
        # (an odd leading dimension) than the bias pass.
        use_bias = self.use_bias
        fused_bias = use_bias and depth <= FUSED_BIAS_MAX_DEPTH
        width = depth + 1 if fused_bias else depth
        kernel = np.empty((groups, width, out_group), x.dtype)
        kernel[:, :depth] = w["kernel"].reshape(depth, groups, out_group).transpose(1, 0, 2)
        if fused_bias:
            kernel[:, depth] = w["bias"].reshape(groups, out_group)
        # Whether a backward pass will follow (training, a gradient check), not ctx.training.
        training = ctx.record
        per_sample = rows // batch if batch else 0
        # Both modes unfold, multiply and (when it can) activate about CHUNK_BYTES of columns at
        # a time, so that each block is still in cache for its GEMM and its activation.
        row_bytes = per_sample * depth * groups * x.itemsize
        chunk = max(1, min(batch, CHUNK_BYTES // max(row_bytes, 1)))
        # The output, and the columns, live in buffers reused batch after batch: a fresh array
        # of more than 32 MB (W2's first conv output at batch 1,024 is 88 MB) is new pages from
        # the kernel every time, and touching them cost more than the layer's GEMM.
        zg = ctx.buffer("z", (groups, rows, out_group), x.dtype)
        # The columns are (groups, rows, width) to the GEMMs, stored row-major or, when a
        # window row is shorter than half an output row (few input channels: the first layer
        # on images), offset-major: then the unfolding copies whole output rows at a time
        # instead of runs of kernel_w * channels values (W2's first conv, 1 channel: 1.3 ->
        # 0.2 ms a batch of 128; row-major wins from about 8 channels on).
        offset_major = 2 * kernel_size[-1] * in_group < placed[-1]
        if training:
            # Training keeps the whole batch's columns for the kernel gradient.
            cols = column_buffer(ctx, groups, rows, width, x.dtype, offset_major)
        else:
            # Inference (predict, evaluate) needs no columns afterwards: keep one block of them,
            # so a batch of 1,024 does not hold its whole column array (142 MB for W2's second
            # conv).
            cols = column_buffer(ctx, groups, chunk * per_sample, width, x.dtype, offset_major)
        cols = unfold_buffer(cols, depth)
        activation = self.activation
        in_place = activation.elementwise and not activation.uses_input
        # With one group z is zg's rows: each block gets its bias and activation (in place, as
        # backward needs only y) right after its GEMM.
        blockwise = in_place and groups == 1
        for start in range(0, batch, chunk):
            stop = min(start + chunk, batch)
            rows_in = slice(start * per_sample, stop * per_sample)
            part = cols[:, rows_in] if training else cols[:, : (stop - start) * per_sample]
            np.copyto(
                part[..., :depth].reshape(groups, stop - start, *placed, *kernel_size, in_group),
                views[:, start:stop],
            )
            np.matmul(part, kernel, out=zg[:, rows_in])
            if blockwise:
                block = zg[0, rows_in]
                if use_bias and not fused_bias:
                    block += w["bias"]
                activation.forward(block, out=block)
        # The whole batch's columns, or None when they were unfolded in parts (backprop, if a
        # caller asks for it in inference, unfolds them again).
        kept_cols = cols if training or chunk >= batch else None
        # A view when groups == 1; otherwise the group outputs are interleaved into filters.
        z = zg.transpose(1, 0, 2).reshape(rows, filters)
        if blockwise:
            y = z
        else:
            if use_bias and not fused_bias:
                z += w["bias"]
            y = activation.forward(z, out=z) if in_place else activation.forward(z)
        kept_z = z if activation.uses_input else None
        need_dx = ctx.need_dx
        # Backprop runs when ctx.node names another layer: take its buffers now, and only when a
        # backward pass will follow.
        # The input gradient goes a few samples at a time: each block's window gradients (one
        # GEMM) are still in cache when the col2im adds read them.
        sample_bytes = per_sample * depth * groups * x.itemsize
        dx_step = max(1, min(batch, DX_CHUNK_BYTES // max(sample_bytes, 1)))
        n_offsets = math.prod(kernel_size)
        dcols_shape = (n_offsets, groups, dx_step * per_sample, in_group)
        natural_shape = (groups, dx_step * per_sample, out_group)
        # A plain 1-D convolution with fewer filters than input channels takes its input
        # gradient as one GEMM over the output gradient's windows (see _dx_from_dz_windows):
        # those windows are kernel * filters wide, the window gradients kernel * channels.
        from_dz_windows = (
            rank == 1 and groups == 1 and blocks is None and strides == (1,)
            and dilation == (1,) and filters < channels
        )  # fmt: skip
        dz_windows_buffer = dx_direct_buffer = None
        if need_dx and training and from_dz_windows:
            dz_windows_buffer = ctx.buffer("dz_windows", (batch, *spatial, n_offsets, filters), x.dtype)
            dx_direct_buffer = ctx.buffer("dx", xl.shape, x.dtype)
            dcols_buffer = natural_buffer = dxp_buffer = None
        elif need_dx and training:
            dcols_buffer = ctx.buffer("dcols", dcols_shape, x.dtype)
            natural_buffer = ctx.buffer("dz_natural", natural_shape, x.dtype) if blocks else None
            dxp_buffer = ctx.buffer("dx", (batch, *grouped.shape[1:]), x.dtype)
        else:
            dcols_buffer = natural_buffer = dxp_buffer = None

        def backprop(dy):
            dz = activation.backward(kept_z, y, to_last(self, dy).reshape(rows, filters))
            # Contiguous per group for BLAS; no copy when groups == 1.
            dzg = np.ascontiguousarray(dz.reshape(rows, groups, out_group).transpose(1, 0, 2))
            cols = kept_cols
            if cols is None:
                cols = column_buffer(None, groups, rows, width, x.dtype, offset_major)
                cols = unfold_buffer(cols, depth)
                np.copyto(
                    cols[..., :depth].reshape(groups, batch, *placed, *kernel_size, in_group),
                    views,
                )
            # The long-K product with the columns in their contiguous layout: OpenBLAS runs it
            # 10-15% faster so (W2's second conv: 5.0 -> 4.5 ms, (dz^T cols)^T; first conv,
            # offset-major: 1.6 -> 1.4 ms, cols^T dz).
            if offset_major:
                dkernel = np.matmul(cols.transpose(0, 2, 1), dzg)
            else:
                dkernel = np.matmul(dzg.transpose(0, 2, 1), cols).transpose(0, 2, 1)
            grads = {
                "kernel": dkernel[:, :depth].transpose(1, 0, 2).reshape(w["kernel"].shape)
            }
            if fused_bias:
                grads["bias"] = dkernel[:, depth].reshape(filters)
            elif use_bias:
                # A GEMV with ones, several times faster than dz.sum(axis=0) down the rows.
                grads["bias"] = np.ones(rows, dz.dtype) @ dz
            if not need_dx:
                return None, grads
            if from_dz_windows:
                dx = _dx_from_dz_windows(
                    dzg[0].reshape(batch, *out, filters), w["kernel"], pads[0][0], spatial[0],
                    dz_windows_buffer, dx_direct_buffer,
                )
                return from_last(self, dx), grads
            # The window gradients one kernel offset at a time, (offsets, groups, rows, in_group),
            # with the rows in natural position order: each offset's block is then contiguous,
            # and so is each output row of its region in dx, and the col2im adds run along whole
            # rows (span_w x in_group values) instead of one in_group-value run a position (W2's
            # second conv: 115,000 inner loops a batch of 128 -> 11,500).
            kernel_by_offset = np.ascontiguousarray(
                kernel[:, :depth].reshape(groups, n_offsets, in_group, out_group).transpose(1, 0, 3, 2)
            )
            dcols_all = dcols_buffer if dcols_buffer is not None else np.empty(dcols_shape, x.dtype)
            naturals = natural_buffer
            if blocks is not None and naturals is None:
                naturals = np.empty(natural_shape, x.dtype)
            dxp = dxp_buffer if dxp_buffer is not None else np.empty(
                (batch, *grouped.shape[1:]), x.dtype
            )
            regions = [
                offset_region(offset, strides, dilation, span) for offset in np.ndindex(*kernel_size)
            ]
            # Offset 0 covers the box [0, span) of every axis when strides and dilation are 1:
            # copy it there and zero only the rest, instead of zeroing everything and adding it.
            boxed = max(strides) == 1 and max(dilation) == 1
            moved = 1 if boxed else 0
            for start in range(0, batch, dx_step):
                stop = min(start + dx_step, batch)
                n_rows = (stop - start) * per_sample
                dz_rows = dzg[:, start * per_sample : stop * per_sample]
                if blocks is not None:
                    # From the window-split order (batch, *pool, *inner) back to natural order.
                    natural = naturals[:, :n_rows]
                    np.copyto(
                        to_blocks(natural.reshape(groups, stop - start, *span, out_group), 2, blocks),
                        dz_rows.reshape(groups, stop - start, *placed, out_group),
                    )
                    dz_rows = natural
                dcols = np.matmul(dz_rows, kernel_by_offset, out=dcols_all[:, :, :n_rows])
                dcols = dcols.reshape(n_offsets, groups, stop - start, *span, in_group)
                block = dxp[start:stop]
                if boxed:
                    for axis, size in enumerate(span, start=1):
                        box = tuple(slice(0, m) for m in span[: axis - 1])
                        block[(slice(None), *box, slice(size, None))] = 0
                    np.copyto(block[regions[0]], np.moveaxis(dcols[0], 0, -2))
                else:
                    block.fill(0)
                for index in range(moved, n_offsets):
                    target = block[regions[index]]
                    target += np.moveaxis(dcols[index], 0, -2)
            dx = dxp[interior(pads, spatial)].reshape(xl.shape)
            return from_last(self, dx), grads

        return from_last(self, y.reshape(batch, *placed, filters)), backprop


def _dx_from_dz_windows(dz, kernel, before: int, steps: int, windows=None, dx=None):
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


@LAYERS.register("Conv1D", "Convolution1D")
class Conv1D(BaseConv):
    """1D convolution (cross-correlation, as Keras):
    `y[t, f] = activation(sum_{k, c} x[t * stride + k * dilation - pad, c] * kernel[k, c, f] + bias[f])`,
    with input channels and filters split into `groups` independent groups.

    Input shape (batch, steps, channels) or (batch, channels, steps) for channels_first; output
    shape (batch, new_steps, filters). Kernel (kernel_size, channels / groups, filters).
    """

    type: Literal["Conv1D"] = "Conv1D"
    padding: CausalPadding = "valid"
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, channels)"


@LAYERS.register("Conv2D", "Convolution2D")
class Conv2D(BaseConv):
    """2D convolution (cross-correlation, as Keras):
    `y[i, j, f] = activation(sum_{a, b, c} x[i*sh + a*dh - pad_top, j*sw + b*dw - pad_left, c]
    * kernel[a, b, c, f] + bias[f])`, with channels and filters split into `groups`.

    Input shape (batch, height, width, channels), or (batch, channels, height, width) for
    channels_first; output (batch, new_height, new_width, filters) in the same layout.
    Kernel (kh, kw, channels / groups, filters).
    """

    type: Literal["Conv2D"] = "Conv2D"
    padding: Padding = "valid"
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"
