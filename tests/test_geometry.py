"""Geometry core, checked against scipy's Rotation, hand-derived cases and the real Pascal3D+ annotations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
from scipy.spatial.transform import Rotation

from disent_jax import geometry as g


def _scipy_quat(q_wxyz):
  """scipy uses scalar-last (x, y, z, w)."""
  return Rotation.from_quat(np.roll(np.asarray(q_wxyz, np.float64), -1, axis=-1))


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def _random_q(rng, n):
  return Rotation.random(n, random_state=rng).as_quat()[:, [3, 0, 1, 2]]


def test_quat_to_matrix_matches_scipy(rng):
  q = _random_q(rng, 200)
  np.testing.assert_allclose(g.quat_to_matrix(q), _scipy_quat(q).as_matrix(), atol=1e-6)


def test_matrix_to_quat_matches_scipy_and_is_canonical(rng):
  q = _random_q(rng, 200)
  # Include the hard cases: identity, 180-degree turns about each axis and about a diagonal.
  special = Rotation.from_rotvec(np.pi * np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1],
                                                   [1, 1, 0] / np.sqrt(2), [0, 0, 0]])).as_quat()
  q = np.concatenate([q, special[:, [3, 0, 1, 2]]])
  m = _scipy_quat(q).as_matrix()
  got = np.asarray(g.matrix_to_quat(jnp.asarray(m, jnp.float32)))
  assert np.all(got[:, 0] >= 0)
  np.testing.assert_allclose(np.abs(np.sum(got * q, axis=-1)), 1.0, atol=1e-6)
  np.testing.assert_allclose(_scipy_quat(got).as_matrix(), m, atol=1e-6)


def test_multiply_matches_matrix_product_and_scipy(rng):
  q1, q2 = _random_q(rng, 100), _random_q(rng, 100)
  prod = np.asarray(g.quat_multiply(q1, q2))
  np.testing.assert_allclose(g.quat_to_matrix(prod),
                             np.asarray(g.quat_to_matrix(q1)) @ np.asarray(g.quat_to_matrix(q2)),
                             atol=1e-6)
  np.testing.assert_allclose(_scipy_quat(prod).as_matrix(),
                             (_scipy_quat(q1) * _scipy_quat(q2)).as_matrix(), atol=1e-6)


def test_inverse_and_conjugate(rng):
  q = _random_q(rng, 50)
  ident = g.quat_multiply(q, g.quat_inverse(q))
  np.testing.assert_allclose(ident, np.tile([1.0, 0, 0, 0], (50, 1)), atol=1e-6)
  np.testing.assert_allclose(g.quat_inverse(2.0 * q), g.quat_conjugate(q) / 2.0, atol=1e-6)


def test_canonical_sign():
  q = jnp.array([[-0.5, 0.5, 0.5, 0.5], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -0.6, 0.8],
                 [0.5, -0.5, 0.5, 0.5]])
  np.testing.assert_allclose(g.quat_canonical(q), [[0.5, -0.5, -0.5, -0.5], [0, 1, 0, 0],
                                                   [0, 0, 0.6, -0.8], [0.5, -0.5, 0.5, 0.5]])


def test_random_quaternions_are_uniform():
  q = np.asarray(g.random_quaternions(jax.random.key(0), (20000,)))
  np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-5)
  assert np.all(q[:, 0] >= 0)
  # Haar measure: the rotation angle has density (1 - cos a) / pi; its mean is pi/2 + 2/pi.
  angles = 2 * np.arccos(np.clip(q[:, 0], -1, 1))
  assert abs(angles.mean() - (np.pi / 2 + 2 / np.pi)) < 0.02
  # Rotated unit vectors are uniform on the sphere: mean ~ 0.
  v = np.asarray(g.quat_to_matrix(q))[:, :, 2]
  assert np.all(np.abs(v.mean(0)) < 0.03)


def test_axis_angle_round_trip(rng):
  rv = Rotation.random(100, random_state=rng).as_rotvec()
  rv = np.concatenate([rv, [[0, 0, 0], [1e-6, 0, 0]]])
  q = np.asarray(g.axis_angle_to_quat(rv))
  np.testing.assert_allclose(_scipy_quat(q).as_matrix(), Rotation.from_rotvec(rv).as_matrix(),
                             atol=1e-6)
  np.testing.assert_allclose(g.quat_to_axis_angle(q), rv, atol=1e-5)


def test_slerp_matches_scipy(rng):
  from scipy.spatial.transform import Slerp
  q = _random_q(rng, 2)
  ts = np.linspace(0, 1, 7)
  ref = Slerp([0, 1], _scipy_quat(q))(ts).as_matrix()
  got = g.quat_to_matrix(g.quat_slerp(q[0], q[1], ts))
  np.testing.assert_allclose(got, ref, atol=1e-5)


def test_geodesic_matches_scipy_magnitude(rng):
  q1, q2 = _random_q(rng, 300), _random_q(rng, 300)
  r1, r2 = _scipy_quat(q1), _scipy_quat(q2)
  ref = np.degrees((r1 * r2.inv()).magnitude())
  np.testing.assert_allclose(g.geodesic_deg(r1.as_matrix(), r2.as_matrix()), ref, atol=1e-3)
  np.testing.assert_allclose(g.quat_geodesic_deg(q1, q2), ref, atol=1e-3)
  np.testing.assert_allclose(g.quat_geodesic_deg(q1, -q2), ref, atol=1e-3)  # q ~ -q


@pytest.mark.parametrize("angle_deg", [1e-4, 1e-2, 0.5, 90.0, 179.5, 179.99, 180.0])
def test_geodesic_is_accurate_near_0_and_180(angle_deg):
  axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
  r = Rotation.from_rotvec(np.radians(angle_deg) * axis)
  base = Rotation.from_rotvec([0.3, -0.2, 1.0])
  r1 = (r * base).as_matrix()
  r2 = base.as_matrix()
  with jax.enable_x64(True):  # float64 to see the formula's accuracy, not float32 rounding
    got = float(g.geodesic_deg(jnp.asarray(r1), jnp.asarray(r2)))
    got_q = float(g.quat_geodesic_deg(jnp.asarray((r * base).as_quat()[[3, 0, 1, 2]]),
                                      jnp.asarray(base.as_quat()[[3, 0, 1, 2]])))
  assert abs(got - angle_deg) < 1e-8 * max(1.0, angle_deg) + 1e-9
  assert abs(got_q - angle_deg) < 1e-8 * max(1.0, angle_deg) + 1e-9


def test_geodesic_gradient_is_finite_at_zero():
  grad = jax.grad(lambda r: g.geodesic_deg(r, jnp.eye(3)))(jnp.eye(3))
  assert np.all(np.isfinite(grad))


# --- rotation anchors ---------------------------------------------------------------------------------


def test_rotation_anchors_n7_gives_paper_259():
  a = g.rotation_anchors(7)
  assert a.shape == (259, 4)
  np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, atol=1e-12)
  # Distinct as rotations: no pair with |<qa, qb>| = 1.
  gram = np.abs(a @ a.T) - np.eye(len(a))
  assert gram.max() < 1 - 1e-6
  # Deterministic and fixed.
  np.testing.assert_array_equal(a, g.rotation_anchors(7))


def test_rotation_anchors_other_sizes():
  # 343 = 7^3 grid points, minus 2 * (49 - 7) repeats at u1 = 0 and 1. For odd n that is all; for even n,
  # u2 (u3) = k/n and k/n + 1/2 give antipodal q, i.e. the same rotation, which is removed too.
  assert len(g.rotation_anchors(1)) == 1
  assert len(g.rotation_anchors(9)) == 9 ** 3 - 2 * (81 - 9)
  assert len(g.rotation_anchors(4)) == 2 + 2 + 2 * 8


def test_anchor_assignment_equals_brute_force_geodesic(rng):
  anchors = g.rotation_anchors(7)
  q = _random_q(rng, 500)
  idx = np.asarray(g.assign_rotation_anchor(jnp.asarray(q, jnp.float32), anchors))
  # Brute force with scipy: the angle of q_a^-1 q for every (q, anchor) pair.
  qi = np.repeat(q, len(anchors), axis=0)
  ai = np.tile(anchors, (len(q), 1))
  dist = (_scipy_quat(ai).inv() * _scipy_quat(qi)).magnitude().reshape(len(q), len(anchors))
  best = dist.min(axis=1)
  np.testing.assert_allclose(dist[np.arange(len(q)), idx], best, atol=1e-5)


def test_encode_decode_round_trip_below_1e4_degrees(rng):
  anchors = g.rotation_anchors(7)
  q = jnp.asarray(_random_q(rng, 2000), jnp.float32)
  idx, qd = jax.jit(g.encode_rotation)(q, anchors)
  back = jax.jit(g.decode_rotation)(idx, qd, anchors)
  err = np.asarray(g.quat_geodesic_deg(q, back))
  assert err.max() < 1e-4, err.max()
  assert np.all(np.asarray(qd)[:, 0] >= 0)
  # The residual is the rotation from the anchor to q: small, bounded by the anchor spacing.
  res_angle = np.asarray(g.quat_geodesic_deg(qd, jnp.array([1.0, 0, 0, 0])))
  assert res_angle.max() < 60.0


@pytest.mark.parametrize("n", [1, 4, 9])
def test_encode_decode_round_trip_other_grids(rng, n):
  anchors = g.rotation_anchors(n)
  q = jnp.asarray(_random_q(rng, 300), jnp.float32)
  back = g.decode_rotation(*g.encode_rotation(q, anchors), anchors)
  assert float(jnp.max(g.quat_geodesic_deg(q, back))) < 1e-4


def test_residual_definition_matches_paper_eq2(rng):
  anchors = g.rotation_anchors(7)
  q = _random_q(rng, 20)
  idx, qd = g.encode_rotation(jnp.asarray(q), anchors)
  ref = _scipy_quat(q) * _scipy_quat(anchors[np.asarray(idx)]).inv()  # q_gt * q_a^-1
  np.testing.assert_allclose(_scipy_quat(np.asarray(qd)).as_matrix(), ref.as_matrix(), atol=1e-5)


# --- translation ---------------------------------------------------------------------------------------


def test_translation_grid_round_trip(rng):
  grid = g.TranslationGrid()
  np.testing.assert_allclose(grid.cell_size, [0.25, 0.25, 0.25])  # equal cubes
  t = rng.uniform(grid.lower, grid.upper, size=(5000, 3))
  idx, res, out = g.encode_translation(jnp.asarray(t), grid)
  assert not np.any(out)
  assert np.all((np.asarray(res) >= 0) & (np.asarray(res) <= 1))
  np.testing.assert_allclose(g.decode_translation(idx, res, grid), t, atol=2e-6)
  # The cell really contains t, and the centres table agrees with the index order.
  c = grid.centers()[np.asarray(idx)]
  assert np.all(np.abs(t - c) <= grid.cell_size / 2 + 1e-6)


def test_translation_grid_round_trip_float64_is_exact(rng):
  grid = g.TranslationGrid(cells=(3, 5, 4))
  t = rng.uniform(grid.lower, grid.upper, size=(1000, 3))
  with jax.enable_x64(True):
    back = g.decode_translation(*g.encode_translation(jnp.asarray(t), grid)[:2], grid)
  np.testing.assert_allclose(back, t, rtol=0, atol=1e-12)


def test_translation_out_of_range_is_clipped_not_wrapped(caplog):
  grid = g.TranslationGrid(lower=(-0.25, -0.25, 0.5), upper=(1.5, 1.5, 10.0), cells=(7, 7, 19))
  t = np.array([[-1.0, 0.5, 2.0], [0.5, 0.5, 50.0], [0.5, 0.5, 2.0]])
  idx, res, out = g.encode_translation(jnp.asarray(t), grid)
  np.testing.assert_array_equal(out, [True, True, False])
  back = np.asarray(g.decode_translation(idx, res, grid))
  np.testing.assert_allclose(back[0], [-0.25, 0.5, 2.0], atol=1e-6)  # clipped to the border
  np.testing.assert_allclose(back[1], [0.5, 0.5, 10.0], atol=1e-5)
  with caplog.at_level("WARNING"):
    assert g.count_out_of_range(t, grid) == 2
  assert "2 of 3" in caplog.text


def test_crop_translation_round_trip_and_definition(rng):
  k = np.array([[300.0, 0, 112.0], [0, 310.0, 100.0], [0, 0, 1]])
  t_cam = np.stack([rng.uniform(-0.5, 0.5, 50), rng.uniform(-0.5, 0.5, 50), rng.uniform(2, 6, 50)], -1)
  bbox = np.stack([rng.uniform(0, 50, 50), rng.uniform(0, 50, 50), rng.uniform(100, 200, 50),
                   rng.uniform(60, 200, 50)], -1)
  tc = np.asarray(g.camera_to_crop_translation(t_cam, bbox, k))
  # Hand computation of the definition for one instance.
  u = 300 * t_cam[0, 0] / t_cam[0, 2] + 112
  v = 310 * t_cam[0, 1] / t_cam[0, 2] + 100
  w, h = bbox[0, 2] - bbox[0, 0], bbox[0, 3] - bbox[0, 1]
  side = max(w, h)  # the square crop centred on the box
  left, top = (bbox[0, 0] + bbox[0, 2]) / 2 - side / 2, (bbox[0, 1] + bbox[0, 3]) / 2 - side / 2
  np.testing.assert_allclose(tc[0, 0], (u - left) / side, rtol=1e-5)
  np.testing.assert_allclose(tc[0, 1], (v - top) / side, rtol=1e-5)
  np.testing.assert_allclose(tc[0, 2], t_cam[0, 2] / 0.5 * side / 305.0, rtol=1e-5)
  # An object centred in its box sits at the crop centre (0.5, 0.5) whatever the box's aspect ratio.
  k_c = np.array([[100.0, 0, 50.0], [0, 100.0, 50.0], [0, 0, 1]])
  centred = np.asarray(g.camera_to_crop_translation([0.0, 0.0, 3.0], [40.0, 30.0, 60.0, 70.0], k_c))
  np.testing.assert_allclose(centred[:2], [0.5, 0.5], atol=1e-6)
  back = g.crop_to_camera_translation(tc, bbox, k)
  np.testing.assert_allclose(back, t_cam, rtol=1e-5, atol=1e-6)


# --- Pascal3D+ viewpoints -------------------------------------------------------------------------------


def test_viewpoint_zero_is_camera_looking_at_front_from_minus_y():
  r = np.asarray(g.viewpoint_to_rotation(0.0, 0.0, 0.0))
  # Object +z (up) maps to camera -y (up in the image); object +y points away from the camera.
  np.testing.assert_allclose(r @ [0, 0, 1], [0, -1, 0], atol=1e-7)
  np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, 1], atol=1e-7)


def test_viewpoint_round_trip(rng):
  az = rng.uniform(0, 2 * np.pi, 500)
  el = rng.uniform(-np.pi / 2 + 1e-3, np.pi / 2 - 1e-3, 500)
  th = rng.uniform(-np.pi + 1e-3, np.pi - 1e-3, 500)
  with jax.enable_x64(True):
    r = g.viewpoint_to_rotation(jnp.asarray(az), jnp.asarray(el), jnp.asarray(th))
    az2, el2, th2 = (np.asarray(a) for a in g.rotation_to_viewpoint(r))
  np.testing.assert_allclose(az2, az, atol=1e-9)
  np.testing.assert_allclose(el2, el, atol=1e-9)
  np.testing.assert_allclose(th2, th, atol=1e-9)
  # At the pole only az - theta... is defined; the rotation must still round-trip.
  with jax.enable_x64(True):
    r_pole = g.viewpoint_to_rotation(0.7, np.pi / 2, 0.2)
    back = g.viewpoint_to_rotation(*g.rotation_to_viewpoint(r_pole))
    np.testing.assert_allclose(back, r_pole, atol=1e-9)


def _load_rotation_data(shared_data):
  path = shared_data / "pascal3d_aeroplane_voc_rotations" / "aeroplanetrue.mat"
  data = scipy.io.loadmat(path, squeeze_me=False)["rotationData"][0]
  eulers = np.stack([np.asarray(d["euler"], np.float64).ravel() for d in data])
  rots = np.stack([np.asarray(d["rot"], np.float64) for d in data])
  return eulers, rots


def test_viewpoint_reproduces_all_865_real_annotations(shared_data):
  eulers, rots = _load_rotation_data(shared_data)
  assert len(rots) == 865
  theta, elevation, azimuth = eulers[:, 0], eulers[:, 1], eulers[:, 2]
  with jax.enable_x64(True):
    r = np.asarray(g.viewpoint_to_rotation(jnp.asarray(azimuth), jnp.asarray(elevation),
                                           jnp.asarray(theta)))
  assert np.abs(r - rots).max() < 1e-6
  # The sign convention matters: flipping azimuth alone breaks the agreement.
  with jax.enable_x64(True):
    wrong = np.asarray(g.viewpoint_to_rotation(-jnp.asarray(azimuth), jnp.asarray(elevation),
                                               jnp.asarray(theta)))
  assert np.abs(wrong - rots).max() > 0.1


def test_camera_rotation_matches_pascal3d_camera_centre():
  rng = np.random.default_rng(3)
  for _ in range(20):
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(-1.2, 1.2)
    with jax.enable_x64(True):
      r = np.asarray(g.viewpoint_to_camera_rotation(az, el, 0.0))
      r_vk = np.asarray(g.viewpoint_to_rotation(az, el, 0.0))
    # Pascal3D+ project_3d.m: camera centre d (cos el sin az, -cos el cos az, sin el) in the object frame.
    centre = -r.T @ np.array([0.0, 0.0, 3.0])
    np.testing.assert_allclose(centre, 3.0 * np.array([np.cos(el) * np.sin(az), -np.cos(el) * np.cos(az),
                                                       np.sin(el)]), atol=1e-12)
    np.testing.assert_allclose(r, np.diag([1.0, -1.0, -1.0]) @ r_vk.T, atol=1e-12)
    # Upright: the object's up axis (+z) points up in the image (negative camera y) when theta = 0.
    assert (r @ [0.0, 0.0, 1.0])[1] < 0


def test_camera_rotation_round_trip_and_same_errors():
  rng = np.random.default_rng(4)
  az, el, th = rng.uniform(0, 2 * np.pi, 200), rng.uniform(-1.5, 1.5, 200), rng.uniform(-3, 3, 200)
  with jax.enable_x64(True):
    r = g.viewpoint_to_camera_rotation(jnp.asarray(az), jnp.asarray(el), jnp.asarray(th))
    az2, el2, th2 = (np.asarray(a) for a in g.camera_rotation_to_viewpoint(r))
    r_vk = g.viewpoint_to_rotation(jnp.asarray(az), jnp.asarray(el), jnp.asarray(th))
    # Geodesic errors between poses are the same in both conventions.
    e_cv = np.asarray(g.geodesic_deg(r[:-1], r[1:]))
    e_vk = np.asarray(g.geodesic_deg(r_vk[:-1], r_vk[1:]))
  np.testing.assert_allclose(az2, az, atol=1e-9)
  np.testing.assert_allclose(el2, el, atol=1e-9)
  np.testing.assert_allclose(th2, th, atol=1e-9)
  np.testing.assert_allclose(e_cv, e_vk, atol=1e-7)
