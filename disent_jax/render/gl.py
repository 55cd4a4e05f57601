"""Fast renderer: moderngl on a headless EGL context (Mesa llvmpipe on CPU, or a GPU's EGL driver).

On a quiet 2-core machine of ours: about 1,900-3,400 renders/s at 64-224 px (rendering.md); with the cores
busy with other processes, 700-1,500/s at 64 px (use lp_threads=1 then). Pixel-exact against ray casting.

Meshes are drawn indexed (each shared vertex shaded once); the flat face normal is computed per fragment
from screen-space derivatives of the camera-frame position, and per-face colours are fetched from a
texture by gl_PrimitiveID, so no per-face vertex duplication is needed.

The vertex shader applies the project's camera directly (no view/projection matrices):
  X_c = R X + t
  gl_Position = ((2 fx X_c.x + (2 cx - W) X_c.z) / W, (2 fy X_c.y + (2 cy - H) X_c.z) / H,
                 (f + n) / (f - n) X_c.z - 2 f n / (f - n), X_c.z)
so window x = u and window y = v, and `fbo.read()` (bottom-of-window first) is already top-row-first: no flip.
Window y == v mirrors the usual GL orientation, which reverses the triangle winding, so `gl_FrontFacing`
is not trusted: the two-sided normal is flipped in the fragment shader when dot(n, X_c) > 0.

One RGBA float32 target holds the shaded colour in RGB and the camera depth Z_c in A (0 = empty, since
every drawn fragment lies beyond the near plane), so a single read returns colour, mask and depth.

PROCESS SAFETY: never create a GL context in a process that will later `fork` workers that render. A child
forked from a process that had created an EGL (llvmpipe) context hangs when it creates its own context, even
if the parent released its context before forking (measured; children that do not touch GL are fine).
Create `GLRenderer`s lazily inside each worker (or use the 'spawn' start method). Here a child in that
situation gets a `ForkedGLError` instead of a deadlock (and `render_mesh(backend='auto')` falls back to
ray casting), and a renderer refuses to run in a process other than the one that created it.
`egl_available(subprocess_probe=True)` checks for EGL without creating a context in this process.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import subprocess
import sys
from typing import Sequence

import numpy as np
import trimesh

from disent_jax.render import _cache
from disent_jax.render.base import (DEFAULT_AMBIENT, DEFAULT_COLOR, RenderResult, check_face_colors,
                                    check_pose, resolve_shading)
from disent_jax.render.camera import Camera

_VERTEX_SHADER = """
#version 330
uniform mat3 R;
uniform vec3 t;
uniform vec4 intrinsics;  // fx, fy, cx, cy
uniform vec2 size;        // W, H
uniform vec2 near_far;
in vec3 in_pos;
out vec3 v_xc;
void main() {
  vec3 xc = R * in_pos + t;
  v_xc = xc;
  float n = near_far.x;
  float f = near_far.y;
  gl_Position = vec4((2.0 * intrinsics.x * xc.x + (2.0 * intrinsics.z - size.x) * xc.z) / size.x,
                     (2.0 * intrinsics.y * xc.y + (2.0 * intrinsics.w - size.y) * xc.z) / size.y,
                     (f + n) / (f - n) * xc.z - 2.0 * f * n / (f - n),
                     xc.z);
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec3 light_dir;
uniform vec3 color;
uniform float ambient;
uniform float diffuse;
uniform bool use_face_colors;
uniform sampler2D face_colors;  // texel (id % width, id / width) = albedo of face id
in vec3 v_xc;
out vec4 frag;
void main() {
  // Flat face normal from screen-space derivatives of the (perspective-correct, hence exactly planar)
  // camera-frame position: both samples of a 2x2 quad lie on this triangle's plane, helpers included.
  vec3 n = cross(dFdx(v_xc), dFdy(v_xc));
  float len = length(n);
  n = len > 0.0 ? n / len : vec3(0.0);
  // Two-sided: face the camera (gl_FrontFacing is reversed by the y mapping, and CAD winding is random).
  if (dot(n, v_xc) > 0.0) n = -n;
  float lambert = max(dot(n, light_dir), 0.0);
  vec3 albedo = color;
  if (use_face_colors) {
    int w = textureSize(face_colors, 0).x;
    albedo = texelFetch(face_colors, ivec2(gl_PrimitiveID % w, gl_PrimitiveID / w), 0).rgb;
  }
  frag = vec4(clamp(albedo * (ambient + diffuse * lambert), 0.0, 1.0), v_xc.z);
}
"""

_log = logging.getLogger(__name__)

# Near-plane floor (camera units): an object touching the camera is clipped here, as a real lens would.
_MIN_NEAR = 1e-3


# Width of the face-colour texture (face id -> texel (id % width, id // width)).
_FACE_TEX_WIDTH = 4096


@dataclasses.dataclass(eq=False)
class _GLMesh:
  """GPU buffers of one mesh: shared vertices plus an index buffer (normals come from derivatives)."""
  vbo: object  # moderngl.Buffer, (V, 3) float32 positions.
  ibo: object  # moderngl.Buffer, (F, 3) int32 faces.
  vao: object  # moderngl.VertexArray
  n_faces: int
  center: np.ndarray  # bounding sphere, to choose tight near/far planes.
  radius: float
  face_tex: object = None  # moderngl.Texture of per-face albedo, created on first use.

  def release(self) -> None:
    for obj in (self.vao, self.vbo, self.ibo, self.face_tex):
      if obj is not None:
        obj.release()


# pid of the first process that created a context here. A forked child inherits this module's state, so it
# can tell that its parent had EGL initialised; creating a context then hangs (measured, even after the
# parent released its context), so the child gets an error instead of a deadlock.
_CONTEXT_PID: int | None = None


class ForkedGLError(RuntimeError):
  """A GL context was requested in a process forked from one that had already created a context."""


def _create_context(lp_threads: int | None = None):
  """A standalone headless context. backend='egl' must be named: the default is X11 (no display here).

  Args:
    lp_threads: if given, sets LP_NUM_THREADS (Mesa llvmpipe's rasterizer threads) for this process. Mesa
      reads it once, when the first context of the process is created; later values are ignored (logged).
  """
  global _CONTEXT_PID
  if _CONTEXT_PID is not None and _CONTEXT_PID != os.getpid():
    raise ForkedGLError(
        f"this process was forked from process {_CONTEXT_PID}, which had created an EGL context; creating "
        "one here would deadlock. Create GL renderers only inside worker processes (never in the parent "
        "before fork), or start workers with the 'spawn' method.")
  if lp_threads is not None:
    if _CONTEXT_PID is None:
      os.environ["LP_NUM_THREADS"] = str(int(lp_threads))
    elif os.environ.get("LP_NUM_THREADS") != str(int(lp_threads)):
      _log.warning("lp_threads=%s ignored: llvmpipe was already initialised in this process", lp_threads)
  import moderngl  # pylint: disable=import-outside-toplevel
  ctx = moderngl.create_context(standalone=True, backend="egl", require=330)
  if _CONTEXT_PID is None:
    _CONTEXT_PID = os.getpid()
  return ctx


@functools.lru_cache(maxsize=None)
def _probe_subprocess() -> bool:
  code = "from disent_jax.render.gl import _create_context; _create_context().release()"
  env = dict(os.environ)
  # The child must import this package from wherever the parent does.
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
  try:
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120,
                         check=False)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return res.returncode == 0


def egl_available(subprocess_probe: bool = True) -> bool:
  """Whether a headless EGL OpenGL 3.3 context can be created.

  Args:
    subprocess_probe: probe in a short-lived child process (about 1 s, cached), so this process stays free
      of GL state and may still fork workers safely. With False the probe creates and releases a context
      here, which is cheap but makes forking afterwards unsafe.

  Returns:
    True when `GLRenderer` will work.
  """
  if subprocess_probe:
    return _probe_subprocess()
  try:
    _create_context().release()
  except Exception:  # pylint: disable=broad-except  # Any failure means "not available".
    return False
  return True


class GLRenderer:
  """Owns a headless EGL context, a shader program, framebuffers per image size and per-mesh buffers.

  Not thread-safe, and bound to the process that created it (see the module docstring on fork).
  Framebuffers are created on demand for each camera size, so one renderer serves any image size; the
  size given to the constructor is just allocated up front.
  """

  name = "gl"

  def __init__(self, width: int | None = None, height: int | None = None, *, max_meshes: int = 256,
               lp_threads: int | None = None):
    """Creates the context (raises an Exception from moderngl when EGL is unavailable).

    Args:
      width: optional image width to allocate a framebuffer for now.
      height: optional image height (defaults to `width`).
      max_meshes: most meshes whose GPU buffers are kept (least recently used are freed).
      lp_threads: llvmpipe rasterizer threads for this process (sets LP_NUM_THREADS before the first
        context; None leaves the environment alone). Use 1 in each of several worker processes, and on
        busy machines: on our shared 2-core boxes under load, 1 thread rendered 64 px images twice as fast
        as the default (one thread per core), which spins when the cores are taken.
    """
    self._pid = os.getpid()
    self.ctx = _create_context(lp_threads)
    self._fbos: dict[tuple[int, int], object] = {}
    self._meshes: _cache.PerMeshCache[_GLMesh] = _cache.PerMeshCache(
        self._upload, max_size=max_meshes, release=_GLMesh.release)
    with self.ctx:
      self.prog = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
      self.prog["face_colors"].value = 0  # texture unit 0
      if width is not None:
        self._fbo(int(width), int(height if height is not None else width))

  @property
  def info(self) -> dict:
    """The GL driver's description (e.g. GL_RENDERER = 'llvmpipe ...')."""
    with self.ctx:
      return dict(self.ctx.info)

  def _check_process(self) -> None:
    if os.getpid() != self._pid:
      raise RuntimeError("GLRenderer used in a forked child: create renderers inside each worker process "
                         "(a GL context must not exist in the parent before fork)")

  def _fbo(self, width: int, height: int):
    fbo = self._fbos.get((width, height))
    if fbo is None:
      color = self.ctx.renderbuffer((width, height), components=4, dtype="f4")
      depth = self.ctx.depth_renderbuffer((width, height))
      fbo = self.ctx.framebuffer(color_attachments=[color], depth_attachment=depth)
      self._fbos[(width, height)] = fbo
    return fbo

  def _upload(self, mesh: trimesh.Trimesh) -> _GLMesh:
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64).reshape(-1, 3)
    # Indexed drawing lets llvmpipe shade each shared vertex once (about 1.5x faster than 3 vertices per
    # face); flat normals then come from derivatives in the fragment shader and per-face colours from a
    # texture indexed by gl_PrimitiveID (= the face index within the draw call).
    # Zero-size buffers are invalid in GL: an empty mesh gets one dummy vertex/face (never drawn).
    vbo = self.ctx.buffer(v.astype(np.float32).tobytes() if len(v) else bytes(12))
    ibo = self.ctx.buffer(f.astype(np.int32).tobytes() if len(f) else bytes(12))
    vao = self.ctx.vertex_array(self.prog, [(vbo, "3f", "in_pos")], index_buffer=ibo,
                                index_element_size=4)
    center, radius = _cache.bounding_sphere(v[np.unique(f)] if len(f) else v)
    return _GLMesh(vbo=vbo, ibo=ibo, vao=vao, n_faces=len(f), center=center, radius=radius)

  def _write_face_colors(self, gm: _GLMesh, fc: np.ndarray) -> None:
    width = min(gm.n_faces, _FACE_TEX_WIDTH)
    rows = -(-gm.n_faces // width)
    if gm.face_tex is None:
      gm.face_tex = self.ctx.texture((width, rows), 3, dtype="f4")
      gm.face_tex.filter = (self.ctx.NEAREST, self.ctx.NEAREST)
    data = np.zeros((rows * width, 3), np.float32)
    data[:gm.n_faces] = fc
    gm.face_tex.write(data.tobytes())
    gm.face_tex.use(location=0)

  def render(self, mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray, camera: Camera, *,
             color: Sequence[float] = DEFAULT_COLOR, light_dir: Sequence[float] | None = None,
             ambient: float = DEFAULT_AMBIENT, diffuse: float | None = None,
             face_colors: np.ndarray | None = None) -> RenderResult:
    """Renders `mesh` at pose (R, t).

    Args:
      mesh: the triangle mesh (object frame). Its GPU buffers are cached per mesh object (rebuilt if its
        vertices or faces change).
      R: (3, 3) rotation, object -> camera.
      t: (3,) translation, object origin in the camera frame.
      camera: intrinsics and image size.
      color: RGB albedo in [0, 1] (ignored when `face_colors` is given).
      light_dir: direction towards the light in the camera frame; None for the default.
      ambient: ambient term.
      diffuse: diffuse weight; None for 1 - ambient.
      face_colors: optional (F, 3) per-face albedo (float in [0, 1], or uint8).

    Returns:
      The `RenderResult` (see `disent_jax.render.base` for the shading model).
    """
    self._check_process()
    R, t = check_pose(R, t)
    shading = resolve_shading(color, light_dir, ambient, diffuse)
    # Several contexts may live in one process (two renderers, or another library's): make ours current
    # for this call, otherwise GL names would refer to the other context's objects (about 4 us).
    with self.ctx:
      width, height = camera.width, camera.height
      gm = self._meshes.get(mesh)
      fc = check_face_colors(face_colors, gm.n_faces)
      # Tight near/far around the bounding sphere keep the 24-bit depth buffer precise.
      zc = float(R[2] @ gm.center + t[2])
      reach = gm.radius * float(np.linalg.norm(R[2])) * 1.01 + 1e-6
      near, far = max(zc - reach, _MIN_NEAR), zc + reach
      if gm.n_faces == 0 or far <= near:
        return RenderResult.empty(height, width)
      prog = self.prog
      prog["R"].write(R.astype("f4").T.tobytes())  # GLSL mat3 is column-major.
      prog["t"].value = tuple(t)
      prog["intrinsics"].value = (camera.fx, camera.fy, camera.cx, camera.cy)
      prog["size"].value = (float(width), float(height))
      prog["near_far"].value = (near, far)
      prog["light_dir"].value = tuple(shading.light_dir)
      prog["color"].value = tuple(shading.color)
      prog["ambient"].value = shading.ambient
      prog["diffuse"].value = shading.diffuse
      prog["use_face_colors"].value = fc is not None
      if fc is not None:
        self._write_face_colors(gm, fc)
      fbo = self._fbo(width, height)
      fbo.use()
      fbo.viewport = (0, 0, width, height)
      fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
      self.ctx.enable_only(self.ctx.DEPTH_TEST)  # No culling (two-sided), no blending.
      gm.vao.render(mode=self.ctx.TRIANGLES, vertices=3 * gm.n_faces)
      buf = np.frombuffer(fbo.read(components=4, dtype="f4"), np.float32).reshape(height, width, 4)
      depth = np.ascontiguousarray(buf[..., 3])
      mask = depth > 0
      rgb = np.ascontiguousarray(buf[..., :3])
      return RenderResult(rgb=rgb, mask=mask, depth=depth)

  def release(self) -> None:
    """Frees the GL objects and the context (the renderer is unusable afterwards)."""
    if self.ctx is None:
      return
    if os.getpid() == self._pid:  # GL objects of another process's context must not be touched.
      with self.ctx:
        self._meshes.clear()
        for fbo in self._fbos.values():
          for att in (*fbo.color_attachments, fbo.depth_attachment):
            att.release()
          fbo.release()
        self._fbos.clear()
        self.prog.release()
      self.ctx.release()
    self.ctx = None

  def __enter__(self) -> "GLRenderer":
    return self

  def __exit__(self, *exc) -> None:
    self.release()
