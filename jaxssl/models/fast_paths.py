"""Forms of a ResNet's layers that XLA:CPU runs fast, with the same parameters and results.

Two layers take most of a small ResNet's step on XLA:CPU for no work of their own (a 2-core Intel
Xeon, jaxlib 0.12, batch 128-256; `experiments/benchmark.py` shows the whole step):

- A 3 x 3 convolution whose padding outweighs its input. At 24-64 px inputs a ResNet's last
  stages run on 2 x 2 or 1 x 1 maps: a 3 x 3 convolution of a 2 x 2 x 128 map takes 45 ms forward
  and backward, a 4 x 4 x 128 map's (four times the work) 3.4 ms, and the strided 4 x 4 -> 2 x 2
  one 16 ms. On such a map a convolution is a plain linear map from the h*w*C inputs to the
  h'*w'*C' outputs, whose matrix holds the kernel's taps where an output's window meets an input
  and zeros elsewhere: as one matrix product the same convolutions take 1.8 and 3.2 ms
  (`Conv`). The result is the convolution's, up to the order of float32 additions.
- The gradient of max pooling (XLA's select-and-scatter): 25 ms for the ImageNet stem's 3 x 3 / 2
  pool of two 128-image batches of 16 x 16 x 16 maps, against 0.9 ms forward. As the maximum of
  the window's nine strided slices (`max_pool`) it takes 2.3 ms forward and backward. The values
  are the same; the gradient too, except where a window holds several equal maxima, which it
  shares among them where select-and-scatter gives it all to the first.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# The dense form wins on output maps of at most this many positions (measured above: a 4 x 4
# output is faster as a convolution, 2 x 2 and 1 x 1 outputs as a product).
MAX_DENSE_OUTPUT_POSITIONS = 4


@functools.lru_cache(maxsize=64)
def tap_selection(in_shape: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> np.ndarray:
  """[out positions, in positions, taps] 0/1: which kernel tap joins each output to each input."""
  (height, width), (kernel_h, kernel_w) = in_shape, kernel
  out_h = (height + sum(padding[0]) - kernel_h) // strides[0] + 1
  out_w = (width + sum(padding[1]) - kernel_w) // strides[1] + 1
  selection = np.zeros((out_h, out_w, height, width, kernel_h, kernel_w), np.float32)
  for i in range(out_h):
    for j in range(out_w):
      for a in range(kernel_h):
        for b in range(kernel_w):
          row, col = i * strides[0] - padding[0][0] + a, j * strides[1] - padding[1][0] + b
          if 0 <= row < height and 0 <= col < width:
            selection[i, j, row, col, a, b] = 1.0
  return selection.reshape(out_h * out_w, height * width, kernel_h * kernel_w)


def dense_conv(inputs: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """`lax.conv_general_dilated` (NHWC, HWIO, explicit zero padding) as one matrix product."""
  batch, height, width, channels = inputs.shape
  kernel_h, kernel_w, _, features = kernel.shape
  selection = tap_selection((height, width), (kernel_h, kernel_w), tuple(strides), tuple(map(tuple, padding)))
  out_positions = selection.shape[0]
  out_h = (height + sum(padding[0]) - kernel_h) // strides[0] + 1
  taps = kernel.reshape(kernel_h * kernel_w, channels, features)
  matrix = jnp.einsum("pqt,tco->qcpo", jnp.asarray(selection, kernel.dtype), taps).reshape(height * width * channels, out_positions * features)
  return (inputs.reshape(batch, -1) @ matrix).reshape(batch, out_h, out_positions // out_h, features)


class Conv(nnx.Conv):
  """`nnx.Conv` (2-D, explicit padding, no dilation or groups) that runs as `dense_conv` where its
  output map has at most `MAX_DENSE_OUTPUT_POSITIONS` positions and its kernel is wider than
  1 x 1, and as the convolution elsewhere. Same parameters, same result."""

  def _dense_applies(self, inputs: jax.Array) -> bool:
    if inputs.ndim != 4 or self.kernel_size == (1, 1) or self.feature_group_count != 1 or self.mask is not None or self.preferred_element_type is not None:
      return False
    if isinstance(self.padding, str) or self.input_dilation not in (1, None) or self.kernel_dilation not in (1, None):
      return False
    strides = self._strides()
    out_positions = 1
    for size, kernel, stride, (low, high) in zip(inputs.shape[1:3], self.kernel_size, strides, self.padding):
      out_positions *= (size + low + high - kernel) // stride + 1
    return out_positions <= MAX_DENSE_OUTPUT_POSITIONS

  def _strides(self) -> tuple[int, int]:
    return (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides or (1, 1))

  def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
    if out_sharding is not None or not self._dense_applies(inputs):
      return super().__call__(inputs, out_sharding=out_sharding)
    kernel = self.kernel[...]
    bias = self.bias[...] if self.bias is not None else None
    inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
    outputs = dense_conv(inputs, kernel, self._strides(), tuple(map(tuple, self.padding)))
    return outputs if bias is None else outputs + bias


def max_pool(inputs: jax.Array, window: int, stride: int, padding: int) -> jax.Array:
  """`nnx.max_pool` over square windows of NHWC inputs (padding with -inf), as the elementwise
  maximum of the window's strided slices."""
  batch, height, width, channels = inputs.shape
  out_h, out_w = (height + 2 * padding - window) // stride + 1, (width + 2 * padding - window) // stride + 1
  padded = jnp.pad(inputs, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf)
  slices = [
      jax.lax.slice(padded, (0, row, col, 0), (batch, row + stride * (out_h - 1) + 1, col + stride * (out_w - 1) + 1, channels), (1, stride, stride, 1))
      for row in range(window)
      for col in range(window)
  ]
  return functools.reduce(jnp.maximum, slices)
