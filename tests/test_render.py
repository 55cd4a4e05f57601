"""Tests of disent_jax.render: camera conventions, both backends against each other and against the
projected geometry, scene composition flags and determinism, overlays."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from disent_jax.cad.model import normalize_mesh
from disent_jax.errors import ImageError
from disent_jax.render import (Camera, RaycastRenderer, make_renderer, mask_bbox, project, projected_bbox,
                               render_mesh)
from disent_jax.render import scene as scene_lib
from disent_jax.render.overlay import overlay
from disent_jax.render.raycast import render_raycast


def _asymmetric_cylinder() -> trimesh.Trimesh:
  m = trimesh.creation.cylinder(radius=0.3, height=0.9, sections=12)
  v = np.array(m.vertices)
  top = v[:, 2] > 0
  v[top, :2] = v[top, :2] * 0.5 + [0.15, 0.05]  # a leaning, tapered cylinder: no symmetry left
  return trimesh.Trimesh(v, m.faces, process=False)


def _ellipsoid() -> trimesh.Trimesh:
  m = trimesh.creation.icosphere(subdivisions=2)
  return trimesh.Trimesh(np.asarray(m.vertices) * [1.0, 0.6, 0.35], m.faces, process=False)


MESHES = {
    "box": normalize_mesh(trimesh.creation.box((1.0, 0.6, 0.35)))[0],
    "ellipsoid": normalize_mesh(_ellipsoid())[0],
    "cylinder": normalize_mesh(_asymmetric_cylinder())[0],
}
# Non-square, fx != fy, principal point off-centre by a fractional amount.
OFF_CENTRE = Camera(fx=70.0, fy=64.0, cx=37.3, cy=26.6, width=72, height=56)


@pytest.fixture(scope="module")
def gl_or_reason():
  """(GLRenderer, None), or (None, why) when no EGL context can be created here."""
  try:
    from disent_jax.render.gl import GLRenderer  # pylint: disable=import-outside-toplevel
    r = GLRenderer()
  except Exception as e:  # pylint: disable=broad-except
    yield None, f"no headless EGL OpenGL context: {e}"
    return
  yield r, None
  r.release()


@pytest.fixture
def gl_renderer(gl_or_reason):
  r, why = gl_or_reason
  if r is None:
    pytest.skip(why)
  return r


@pytest.fixture(params=["gl", "raycast"])
def renderer(request, gl_or_reason):
  """Each backend in turn (GL skipped cleanly where unavailable)."""
  if request.param == "raycast":
    return RaycastRenderer()
  r, why = gl_or_reason
  if r is None:
    pytest.skip(why)
  return r


def _poses_in_view(rng: np.random.Generator, camera: Camera, mesh: trimesh.Trimesh, n: int):
  """n random poses whose projected vertex box lies inside the image with a 1 px margin."""
  out = []
  while len(out) < n:
    R = scene_lib.random_rotation(rng)
    t = scene_lib.random_translation(rng, camera, z_range=(2.0, 3.0))
    box = projected_bbox(mesh.vertices, R, t, camera)
    if box[0] > 1 and box[1] > 1 and box[2] < camera.width - 1 and box[3] < camera.height - 1:
      out.append((R, t))
  return out


# ------------------------------------------------------------------------------------------------ camera


def test_camera_intrinsics_and_projection():
  cam = Camera.default(64, 48, focal_scale=1.5)
  assert cam.fx == cam.fy == 96.0 and (cam.cx, cam.cy) == (32.0, 24.0)
  np.testing.assert_allclose(cam.K, [[96, 0, 32], [0, 96, 24], [0, 0, 1]])
  R = scene_lib.random_rotation(np.random.default_rng(0))
  t = np.array([0.2, -0.1, 2.5])
  pts = np.random.default_rng(1).normal(size=(10, 3)) * 0.3
  uv = project(pts, R, t, cam)
  xc = pts @ R.T + t
  homog = xc @ cam.K.T
  np.testing.assert_allclose(uv, homog[:, :2] / homog[:, 2:], atol=1e-12)
  np.testing.assert_allclose(project(np.zeros((1, 3)), R, t, cam)[0],
                             [96 * 0.2 / 2.5 + 32, 96 * -0.1 / 2.5 + 24])
  box = projected_bbox(pts, R, t, cam)
  np.testing.assert_allclose(box, [*uv.min(0), *uv.max(0)])
  # OpenCV K (centres at integers) converts by +0.5; scaling and cropping keep projections consistent.
  assert Camera.from_K(cam.K, 64, 48, opencv=True).cx == 32.5
  np.testing.assert_allclose(project(pts, R, t, cam.scaled(2)), 2 * uv, atol=1e-12)
  np.testing.assert_allclose(project(pts, R, t, cam.crop(5, 7, 20, 20)), uv - [5, 7], atol=1e-12)
  with pytest.raises(ValueError):
    projected_bbox(pts, R, np.array([0.0, 0.0, 0.1]), cam)  # points behind the camera
  with pytest.raises(ValueError):
    Camera(fx=0, fy=1, cx=0, cy=0, width=4, height=4)


def test_mask_bbox_uses_continuous_pixel_extent():
  m = np.zeros((6, 8), bool)
  m[2:4, 3:6] = True
  np.testing.assert_array_equal(mask_bbox(m), [3, 2, 6, 4])
  assert mask_bbox(np.zeros((3, 3), bool)) is None


# ---------------------------------------------------------------------------------------------- backends


@pytest.mark.parametrize("camera", [Camera.default(64), OFF_CENTRE], ids=["centred", "off_centre"])
def test_silhouette_bbox_equals_projected_vertex_bbox(renderer, camera):
  """50 random poses over 3 meshes: the rendered box is the projected vertex box to within 1 px."""
  rng = np.random.default_rng(123)
  worst = 0.0
  for k in range(50):
    mesh = list(MESHES.values())[k % 3]
    (R, t), = _poses_in_view(rng, camera, mesh, 1)
    res = renderer.render(mesh, R, t, camera)
    assert res.rgb.shape == (camera.height, camera.width, 3) and res.rgb.dtype == np.float32
    assert res.mask.dtype == bool and res.depth.dtype == np.float32
    got = mask_bbox(res.mask)
    assert got is not None
    worst = max(worst, float(np.abs(got - projected_bbox(mesh.vertices, R, t, camera)).max()))
  assert worst <= 1.0, worst


@pytest.mark.parametrize("camera", [Camera.default(64), OFF_CENTRE], ids=["centred", "off_centre"])
def test_gl_matches_raycast(gl_renderer, camera):
  rng = np.random.default_rng(7)
  for k in range(15):
    mesh = list(MESHES.values())[k % 3]
    R = scene_lib.random_rotation(rng)
    t = scene_lib.random_translation(rng, camera, z_range=(1.6, 3.0), p_truncate=0.3)
    fc = rng.random((len(mesh.faces), 3)) if k % 2 else None
    light = rng.normal(size=3)
    kw = dict(color=(0.2, 0.5, 0.9), face_colors=fc, light_dir=light, ambient=0.25)
    a = render_raycast(mesh, R, t, camera, **kw)
    b = gl_renderer.render(mesh, R, t, camera, **kw)
    union = (a.mask | b.mask).sum()
    both = a.mask & b.mask
    assert union > 0
    assert both.sum() / union > 0.98
    np.testing.assert_array_equal(a.depth[~a.mask], 0)
    np.testing.assert_array_equal(b.depth[~b.mask], 0)
    dz = np.abs(a.depth - b.depth)[both]
    assert np.median(dz) < 1e-4 and np.quantile(dz, 0.98) < 1e-3, dz.max()
    drgb = np.abs(a.rgb - b.rgb)[both].max(-1)
    # A pixel centre exactly on a shared edge may pick either face; everything else agrees.
    assert (drgb > 1e-3).mean() < 0.02


def test_principal_point_shift_moves_the_image(renderer):
  """Moving cx, cy by whole pixels moves the rendering by exactly those pixels."""
  mesh = MESHES["cylinder"]
  R = scene_lib.random_rotation(np.random.default_rng(3))
  t = np.array([0.0, 0.0, 2.6])
  base = Camera(fx=60.0, fy=66.0, cx=32.0, cy=32.0, width=64, height=64)
  shifted = Camera(fx=60.0, fy=66.0, cx=32.0 + 7, cy=32.0 - 5, width=64, height=64)
  a = renderer.render(mesh, R, t, base).mask
  b = renderer.render(mesh, R, t, shifted).mask
  np.testing.assert_array_equal(b[10:50, 17:57], a[15:55, 10:50])


def test_depth_and_shading_of_a_face_on_box(renderer):
  mesh = trimesh.creation.box((0.6, 0.4, 0.2))  # unnormalised: any mesh renders
  cam = Camera.default(32)
  res = renderer.render(mesh, np.eye(3), (0, 0, 2.0), cam, color=(0.5, 1.0, 0.2),
                        light_dir=(0, 0, -1), ambient=0.2, diffuse=0.6)
  assert res.mask.sum() > 50
  np.testing.assert_allclose(res.depth[res.mask], 1.9, atol=1e-5)  # front face at z = 2 - 0.1
  np.testing.assert_allclose(res.rgb[res.mask], np.broadcast_to([0.4, 0.8, 0.16], (res.mask.sum(), 3)),
                             atol=1e-5)
  assert not res.mask[0].any() and res.rgb[0].max() == 0


def test_two_sided_shading_ignores_winding(renderer):
  mesh = MESHES["ellipsoid"]
  flipped = trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1], process=False)
  R = scene_lib.random_rotation(np.random.default_rng(5))
  a = renderer.render(mesh, R, (0.1, 0, 2.2), Camera.default(48))
  b = renderer.render(flipped, R, (0.1, 0, 2.2), Camera.default(48))
  np.testing.assert_array_equal(a.mask, b.mask)
  np.testing.assert_allclose(a.rgb, b.rgb, atol=1e-5)


def test_object_behind_camera_renders_empty(renderer):
  res = renderer.render(MESHES["box"], np.eye(3), (0, 0, -3.0), Camera.default(16))
  assert not res.mask.any() and res.depth.max() == 0


def test_mesh_edit_invalidates_the_cache(renderer):
  mesh = MESHES["box"].copy()
  cam = Camera.default(32)
  a = renderer.render(mesh, np.eye(3), (0, 0, 2.5), cam).mask.sum()
  mesh.vertices = mesh.vertices * 0.5
  b = renderer.render(mesh, np.eye(3), (0, 0, 2.5), cam).mask.sum()
  assert 0 < b < 0.4 * a


def test_render_mesh_backends():
  cam = Camera.default(24)
  a = render_mesh(MESHES["box"], np.eye(3), (0, 0, 2.5), cam, backend="raycast")
  b = render_mesh(MESHES["box"], np.eye(3), (0, 0, 2.5), cam)  # auto: GL here, else ray casting
  assert a.mask.sum() > 0 and (a.mask == b.mask).mean() > 0.98
  with pytest.raises(ValueError):
    make_renderer("vulkan")
  with pytest.raises(ValueError):
    render_mesh(MESHES["box"], np.eye(3), (0, 0), cam, backend="raycast")
  with pytest.raises(ValueError):
    render_mesh(MESHES["box"], np.eye(3), (0, 0, 2), cam, backend="raycast", face_colors=np.ones((3, 3)))


def test_two_gl_renderers_in_one_process(gl_renderer):
  """Each renderer makes its own context current: interleaved use must not mix up GL objects."""
  from disent_jax.render.gl import GLRenderer  # pylint: disable=import-outside-toplevel
  cam = Camera.default(32)
  R = scene_lib.random_rotation(np.random.default_rng(9))
  ref = {k: render_raycast(m, R, (0, 0, 2.4), cam).mask for k, m in MESHES.items()}
  with GLRenderer(32) as other:
    for _ in range(2):
      for k, m in MESHES.items():
        for r in (gl_renderer, other):
          assert (r.render(m, R, (0, 0, 2.4), cam).mask == ref[k]).mean() > 0.99


def test_gl_renderer_refuses_another_process(gl_renderer):
  pid = gl_renderer._pid  # pylint: disable=protected-access
  gl_renderer._pid = -1  # pylint: disable=protected-access  # pretend we are a forked child
  try:
    with pytest.raises(RuntimeError, match="worker process"):
      gl_renderer.render(MESHES["box"], np.eye(3), (0, 0, 2.5), Camera.default(8))
  finally:
    gl_renderer._pid = pid  # pylint: disable=protected-access


# ------------------------------------------------------------------------------------------------ scenes


def test_compose_scene_is_deterministic_and_well_formed(renderer):
  cam = Camera.default(64)
  mesh = MESHES["cylinder"]
  outs = []
  for _ in range(2):
    rng = np.random.default_rng(2024)
    R = scene_lib.random_rotation(rng)
    t = scene_lib.random_translation(rng, cam, p_truncate=0.5)
    outs.append(scene_lib.compose_scene(rng, mesh, R, t, cam, renderer, p_occlude=1.0))
  a, b = outs
  assert a["image"].shape == (64, 64, 3) and a["image"].dtype == np.uint8
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["mask"], b["mask"])
  for key in ("occluded", "truncated", "visible_fraction"):
    assert a[key] == b[key]
  assert a["mask"].any() and not (a["mask"] & ~a["amodal_mask"]).any()
  np.testing.assert_array_equal(a["visible_bbox"], mask_bbox(a["mask"]))
  assert (a["depth"][a["mask"]] > 0).all() and (a["depth"][~a["mask"]] == 0).all()
  # A different seed gives a different image.
  rng = np.random.default_rng(2025)
  c = scene_lib.compose_scene(rng, mesh, scene_lib.random_rotation(rng),
                              scene_lib.random_translation(rng, cam), cam, renderer)
  assert not np.array_equal(a["image"], c["image"])


def test_truncation_flag(renderer):
  cam = Camera.default(48)
  mesh = MESHES["box"]
  rng = np.random.default_rng(0)
  R = scene_lib.random_rotation(rng)
  inside = scene_lib.compose_scene(rng, mesh, R, np.array([0, 0, 2.5]), cam, renderer, p_occlude=0)
  assert not inside["truncated"] and not inside["occluded"] and inside["visible_fraction"] == 1.0
  # Shift the object half out of the right edge: truncated, and the visible box is clipped to the image.
  out = scene_lib.compose_scene(rng, mesh, R, np.array([0.6, 0, 2.5]), cam, renderer, p_occlude=0)
  assert out["truncated"]
  assert out["bbox"][2] > cam.width and out["visible_bbox"][2] == cam.width
  # random_translation's truncated placements do cut the bounding sphere's disc.
  for _ in range(20):
    t = scene_lib.random_translation(rng, cam, p_truncate=1.0)
    u, v = project(np.zeros((1, 3)), np.eye(3), t, cam)[0]
    rho = cam.fx * 0.5 / t[2]
    assert min(u - rho, v - rho) < 0 or u + rho > cam.width or v + rho > cam.height


def test_occluders_hide_part_of_the_object(renderer):
  cam = Camera.default(48)
  rng = np.random.default_rng(11)
  fractions = []
  for _ in range(8):
    out = scene_lib.compose_scene(rng, MESHES["ellipsoid"], scene_lib.random_rotation(rng),
                                  np.array([0.0, 0.0, 2.4]), cam, renderer, p_occlude=1.0)
    assert out["visible_fraction"] >= 0.3 - 1e-9 or not out["occluded"]
    assert out["occluded"] == (out["visible_fraction"] < 0.95)
    fractions.append(out["visible_fraction"])
  assert min(fractions) < 0.95  # at least one occluder actually covers the object


def test_compose_scene_supersampled_and_custom_background(renderer):
  cam = Camera.default(32)
  bg = np.full((32, 32, 3), 200, np.uint8)
  rng = np.random.default_rng(1)
  out = scene_lib.compose_scene(rng, MESHES["box"], np.eye(3), np.array([0, 0, 2.2]), cam, renderer,
                                background=bg, supersample=2, p_occlude=0, p_blur=0, max_noise=0)
  assert out["image"].shape == (32, 32, 3)
  assert (out["image"][0, 0] == 200).all() and out["mask"].any()
  with pytest.raises(ValueError):
    scene_lib.compose_scene(rng, MESHES["box"], np.eye(3), np.array([0, 0, 2.2]), cam, renderer,
                            background=bg[:10])


def test_random_background_range_and_speed():
  rng = np.random.default_rng(0)
  for _ in range(20):
    bg = scene_lib.random_background(rng, 40, 56)
    assert bg.shape == (40, 56, 3) and bg.dtype == np.float32
    assert bg.min() >= 0 and bg.max() <= 1


# ------------------------------------------------------------------------------------------------ overlay


def test_overlay(renderer):
  cam = Camera.default(48, 40)
  img = np.random.default_rng(0).integers(0, 256, (40, 48, 3)).astype(np.uint8)
  out = overlay(img, MESHES["cylinder"], np.eye(3), (0, 0, 2.3), cam, renderer=renderer)
  assert out.shape == img.shape and out.dtype == np.uint8
  mask = renderer.render(MESHES["cylinder"], np.eye(3), (0, 0, 2.3), cam).mask
  outline = (out == [255, 255, 0]).all(-1)
  assert outline.any() and not (outline & ~mask).any()
  np.testing.assert_array_equal(out[~mask], img[~mask])
  with pytest.raises(ImageError):
    overlay(img[:10], MESHES["cylinder"], np.eye(3), (0, 0, 2.3), cam, renderer=renderer)
