"""dSprites-like images drawn procedurally, offline: binary 2D shapes with five known factors.

The factors and their sizes follow dSprites (Matthey et al. 2017):
  shape {square, ellipse, heart} (3), scale linspace(0.5, 1, 6), orientation linspace(0, 2 pi, 40)
  (so index 0 and 39 are the same angle, as in dSprites), pos_x and pos_y linspace(0, 1, 32).
Images are drawn here rather than loaded, at any resolution (e.g. 16 or 32 pixels for CPU runs,
64 for dSprites' own size), by testing each pixel centre against the shape's implicit equation in
its own rotated, scaled frame; the pixel holding the shape's centre is always on, so a shape
smaller than a pixel at a coarse resolution still shows. pos_x moves the shape right (columns),
pos_y moves it down (rows); orientation turns it counter-clockwise on screen. Positions span the
image minus a margin that keeps every shape, at every scale and angle, inside it. Everything is
numpy and deterministic.
"""

from __future__ import annotations

import numpy as np

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
HALF_SIZE = 0.15  # a scale-1 shape's half-width, as a fraction of the image side
# The farthest point of any shape from its centre is the square's corner, sqrt(2) half-widths.
MARGIN = HALF_SIZE * np.sqrt(2.0) + 0.02
_CHUNK = 2048  # images rendered at a time, bounding the [chunk, H, W] temporaries


def _inside(shape, u, v):
  """Whether local-frame points (u right, v up; half-width 1) lie in the shape. Arrays broadcast."""
  if shape == 0:  # square
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0
  if shape == 1:  # ellipse, twice as wide as tall
    return np.square(u) + np.square(v / 0.5) <= 1.0
  # heart: (x^2 + y^2 - 1)^3 <= x^2 y^3, extending |x| <= 1.14, -1 <= y <= 1.25; shrunk to fit
  x, y = 1.14 * u, 1.14 * v + 0.12
  return np.power(np.square(x) + np.square(y) - 1.0, 3) <= np.square(x) * np.power(y, 3)


def factor_values(factors):
  """Continuous values of integer factors [N, 5]: shape index [N], scale, angle (radians),
  centre x and centre y as fractions of the image side (each [N])."""
  factors = check_factors(factors)
  scale = np.linspace(0.5, 1.0, FACTOR_SIZES[1])[factors[:, 1]]
  angle = np.linspace(0.0, 2.0 * np.pi, FACTOR_SIZES[2])[factors[:, 2]]
  positions = np.linspace(MARGIN, 1.0 - MARGIN, FACTOR_SIZES[3])
  return factors[:, 0], scale, angle, positions[factors[:, 3]], positions[factors[:, 4]]


def check_factors(factors):
  """factors as an int64 [N, 5] array; a one-line ValueError if its shape or a value is wrong."""
  factors = np.asarray(factors)
  if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
    raise ValueError(f"factors must be [N, {len(FACTOR_SIZES)}] ({', '.join(FACTOR_NAMES)}); "
                     f"got shape {factors.shape}")
  if not np.issubdtype(factors.dtype, np.integer):
    raise ValueError(f"factors must be integer indices; got dtype {factors.dtype}")
  bad = (factors < 0) | (factors >= np.asarray(FACTOR_SIZES))
  if bad.any():
    name = FACTOR_NAMES[int(np.nonzero(bad.any(0))[0][0])]
    raise ValueError(f"factors: {name} must lie in [0, {FACTOR_SIZES[FACTOR_NAMES.index(name)]})")
  return factors.astype(np.int64)


def render(factors, resolution=32):
  """Binary images of the given integer factors.

  factors: [N, 5] (shape, scale, orientation, pos_x, pos_y indices); resolution: the image side
  in pixels (>= 8). Returns images [N, resolution, resolution, 1] float32 in {0, 1}.
  """
  if not isinstance(resolution, (int, np.integer)) or resolution < 8:
    raise ValueError(f"resolution must be an integer >= 8; got {resolution!r}")
  shape, scale, angle, cx, cy = factor_values(factors)
  centres = (np.arange(resolution) + 0.5) / resolution
  images = np.zeros((len(shape), resolution, resolution), np.float32)
  for start in range(0, len(shape), _CHUNK):
    sl = slice(start, start + _CHUNK)
    # Pixel offsets from the centre with y pointing up, then rotated by -angle into the frame.
    dx = centres[None, None, :] - cx[sl, None, None]
    dy = cy[sl, None, None] - centres[None, :, None]
    cos, sin = np.cos(angle[sl])[:, None, None], np.sin(angle[sl])[:, None, None]
    half = (HALF_SIZE * scale[sl])[:, None, None]
    u, v = (cos * dx + sin * dy) / half, (cos * dy - sin * dx) / half
    for s in range(len(SHAPES)):
      mask = shape[sl] == s
      images[sl][mask] = _inside(s, u[mask], v[mask])
  pixel = np.minimum((np.stack([cy, cx], -1) * resolution).astype(np.int64), resolution - 1)
  images[np.arange(len(shape)), pixel[:, 0], pixel[:, 1]] = 1.0
  return images[..., None]


def factor_grid(strides=(1, 1, 1, 1, 1)):
  """Every factor combination, or a regular sub-grid: index i of factor k taken every strides[k].

  Returns [prod_k ceil(size_k / stride_k), 5] int64, the last factor varying fastest.
  """
  if len(strides) != len(FACTOR_SIZES) or min(strides) < 1:
    raise ValueError(f"strides must be {len(FACTOR_SIZES)} positive integers; got {strides}")
  axes = [np.arange(0, size, stride) for size, stride in zip(FACTOR_SIZES, strides)]
  return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(FACTOR_SIZES))


def sample_factors(rng, n):
  """n factor vectors [n, 5] int64 drawn independently and uniformly; rng: np.random.Generator."""
  return np.stack([rng.integers(0, size, n) for size in FACTOR_SIZES], -1)


def generate(n, seed=0, resolution=32):
  """n distinct grid points chosen uniformly without replacement (seeded) and their images.

  Returns images [n, resolution, resolution, 1] float32, factors [n, 5] int64 and FACTOR_SIZES.
  """
  total = int(np.prod(FACTOR_SIZES))
  if not 1 <= n <= total:
    raise ValueError(f"n must be in [1, {total}]; got {n}")
  flat = np.random.default_rng(seed).choice(total, size=n, replace=False)
  factors = np.stack(np.unravel_index(flat, FACTOR_SIZES), -1).astype(np.int64)
  return render(factors, resolution), factors, FACTOR_SIZES
