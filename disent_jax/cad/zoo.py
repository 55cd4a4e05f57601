"""The built-in procedural CAD zoo: the default CAD database of the 12 Pascal3D+ categories.

`procedural_zoo(seed)` returns 79 parametric models (the size of the Pascal3D+ CAD database the paper
retrieves from), with the Pascal3D+ per-category counts: aeroplane 8, bicycle 6, boat 6, bottle 8, bus 6,
car 10, chair 10, diningtable 6, motorbike 5, sofa 6, train 4, tvmonitor 4. Each model is a union of
trimesh primitives (boxes, cylinders, capsules, cones, ellipsoids, tori, extrusions, lofts, lathes; no
boolean operations) built from a named sub-type (e.g. chair: dining, office, armchair, bar stool,
deckchair, folding, windsor) and continuous parameters drawn from a generator seeded by
(seed, category, cad_index), so the same seed gives identical vertices and each model is independent of
the others. Models are named '<category>/<subtype>_<k>' (k counts within the sub-type), have source
'zoo:<category>/<subtype>' and cad_index 1..N per category, and are normalised with
`model.normalize_mesh` like every other CAD source.

Canonical frame (the Pascal3D+ CAD frame, so that a model trained on the zoo and one trained on the real
Pascal3D+ CAD models share rotation labels):
  * +z is up; objects stand on their base (wheels, legs, hull bottom) at the bottom of the box.
  * The FRONT of every category faces -y: aeroplane nose, car/bus/train front, boat bow, bicycle and
    motorbike front wheel and handlebars, chair and sofa seat front (backrest at +y), tv screen.
  * Long objects (aeroplane fuselage, bicycle, boat, bus, car, motorbike, train) lie along y; wide ones
    (sofa, diningtable, tv screen) along x. A Pascal3D+ viewpoint with azimuth 0 and elevation 0 looks at
    the front (the camera sits at -y); azimuth 90 deg looks at the +x side (see `view_rotation`).
How this was checked, on the 75 real meshes of ../shared/data/pascal3d_cad_off (the checks marked [t]
run in tests/test_zoo.py against both the real meshes and the zoo):
  * [t] Largest extent: z for all 8 bottles and 9 of 10 chairs, y for every bus, car, train, bicycle and
    motorbike and 5 of 6 boats (a sailboat's mast is taller than its hull), x for 6/6 tables, 5/6 sofas
    and 3/4 tvs (the exceptions, an armchair-like sofa and a CRT, are about as deep or tall as wide).
  * Renders of all 75 meshes (`contact_sheet` with azimuth 0, 35 and 90 deg) show noses, bonnets, bus
    and locomotive fronts, front wheels, seat fronts and screens at the -y end; bows are at -y for the
    boats whose bow is distinguishable (the canoe is symmetric).
  * [t] Area-weighted surface statistics: the y-centroid of the top 20 % of the height lies behind the
    centre (> 0: tail fin, roof, backrest) for 7/8 aeroplanes (not the biplane), 6/6 cars, 10/10 chairs
    and 6/6 sofas, and in front (< 0: handlebars) for 6/6 bicycles and 5/5 motorbikes. The y-facing area
    in the back 10 % slab exceeds the front slab's (a flat tail: transom, car rear) for 5/6 boats (the
    canoe ties) and 6/6 cars; for tvs the front slab wins on average (screen in front, tapering CRT behind).
  * [t] Proportions (extent / longest extent, median over the category; zoo medians are within 0.15):
    aeroplane (0.98, 0.94, 0.30), bicycle (0.30, 1, 0.60), boat (0.20, 1, 0.23), bottle (0.29, 0.29, 1),
    bus (0.23, 1, 0.30), car (0.40, 1, 0.30), chair (0.60, 0.61, 1), diningtable (1, 0.67, 0.45),
    motorbike (0.37, 1, 0.54), sofa (1, 0.45, 0.44), train (0.14, 1, 0.19), tvmonitor (1, 0.49, 0.78).

Front and back at the resolution Stage I sees: [t] every zoo model without a rotational symmetry differs
from itself turned half way round about z (and about x and y) in its 32^3 solid occupancy (`voxels.voxelize`)
by IoU <= 0.8, so a pose estimator that sees only the grid can tell front from back. Boxy vehicles need
cues of a voxel or more for that (a voxel is 0.4 m of a 12 m bus): buses have a raked windscreen or a
bonnet in front and roof equipment, a raised rear deck or a roofed front over an open top, and a rising
rear underside; cars a bonnet longer than the boot, a windscreen raked more than the rear window and a
bonnet sloping down to the nose (the pickup's bed is open, its tailgate down); the diesel is a road
switcher (cab near the front between a low short hood and a long hood), the motorboat has a fine bow and a
full transom, the CRT housing tapers from the top, the wall tv's electronics bulge low on its back.
The real meshes are less clear-cut: their half-turn-about-z IoU at 32^3 is 0.80-0.96 for the 6 buses,
0.74-0.97 for the 4 trains, up to 0.92 for the tvs and 0.86 for the boats other than the canoe (1.0).

Symmetry vocabulary (`CadModel.symmetry`): only rotational symmetries are recorded, because only they make
a pose ambiguous. Almost every model is mirror-symmetric about x = 0 (left/right); a reflection is not a
rotation, so it leaves the pose unique and is not recorded. See `SYMMETRIES` and `symmetry_rotations`.
  * None: no proper rotation maps the shape onto itself; the pose is unique.
  * 'rotational-z': every rotation about the z (up) axis (round bottles, a round pedestal table).
  * 'rotational-z-2': the rotation by 180 deg about z (front and back look the same; for a model that is
    also left/right symmetric this is 'mirror-x plus mirror-y'): rectangular/oval/trestle tables, the
    table with a drawer in each long side, the flask, the train carriage, the canoe.
  * 'rotational-z-4': rotations by multiples of 90 deg about z (a square table).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import numpy as np
import trimesh

from disent_jax import geometry
from disent_jax.cad import model as model_lib
from disent_jax.cad import zoo_parts as P
from disent_jax.categories import CATEGORIES

# Symmetry vocabulary (see the module docstring): name -> meaning.
SYMMETRIES: dict[str | None, str] = {
    None: "no rotational symmetry: the pose is unique",
    "rotational-z": "any rotation about the up (z) axis maps the shape onto itself",
    "rotational-z-2": "the 180 deg rotation about z maps the shape onto itself (front == back)",
    "rotational-z-4": "rotations by multiples of 90 deg about z map the shape onto itself",
}

# Sub-types per category, in cad_index order. Repeated names are instances of the same sub-type whose
# k-th copy also switches discrete options (e.g. high vs low wing), so every instance looks different.
SUBTYPES: dict[str, tuple[str, ...]] = {
    "aeroplane": ("airliner", "airliner", "jumbo", "propeller", "propeller", "fighter", "fighter",
                  "glider"),
    "bicycle": ("road", "touring", "mountain", "city", "tandem", "bmx"),
    "boat": ("sailboat", "sailboat", "motorboat", "rowboat", "canoe", "ship"),
    "bottle": ("wine", "wine", "beer", "water", "soda", "jug", "flask", "sports"),
    "bus": ("city", "city", "double_decker", "articulated", "coach", "school"),
    "car": ("sedan", "sedan", "hatchback", "hatchback", "suv", "suv", "pickup", "sports", "van",
            "wagon"),
    "chair": ("dining", "dining", "office", "office", "armchair", "armchair", "bar_stool", "deckchair",
              "folding", "windsor"),
    "diningtable": ("rectangular", "drawer", "round", "oval", "trestle", "square"),
    "motorbike": ("sport", "cruiser", "scooter", "dirt", "touring"),
    "sofa": ("three_seater", "three_seater", "loveseat", "sectional", "daybed", "armchair"),
    "train": ("steam", "diesel", "high_speed", "carriage"),
    "tvmonitor": ("crt", "flat_stand", "monitor", "wall"),
}

# What a category builder returns: the model in its working units (metres, in the canonical frame, not
# yet normalised) and its symmetry (a key of SYMMETRIES).
# Every builder `_<category>(rng, sub, k)` takes the model's own generator, the sub-type name and k, the
# 1-based count of this sub-type so far in SUBTYPES[category] (used to switch discrete options).
Built = tuple[trimesh.Trimesh, str | None]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
  """A uniform draw in [lo, hi) as a Python float."""
  return float(rng.uniform(lo, hi))


# ----------------------------------------------------------------------------------------------------
# aeroplane: fuselage along y, nose at -y, wings along x, fin up.


def _fuselage(length: float, radius: float, stations: Sequence[tuple[float, float, float]],
              width: float = 1.0, sections: int = 16) -> trimesh.Trimesh:
  """A lofted body of revolution-like fuselage.

  Args:
    length: nose (-y) to tail (+y).
    radius: the reference radius.
    stations: (t, r, dz): position t in [0, 1] from the nose, radius factor r and vertical offset dz (in
      radii) of each section.
    width: x/z aspect of the sections.
    sections: points per section.

  Returns:
    The closed body.
  """
  circle = P.superellipse(width, 1.0, sections)
  rings = [P.ring_xz(circle * radius * max(r, 1e-3), -length / 2 + t * length, dz * radius)
           for t, r, dz in stations]
  return P.loft(rings)


def _aeroplane(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Airliners (the second a rear-engined T-tail jet), a jumbo, high/low-wing propeller planes, delta
  fighters (single/twin fin) and a glider."""
  parts = []
  if sub in ("airliner", "jumbo"):
    # The second airliner is a regional jet: engines on the rear fuselage and a T-tail.
    t_tail = sub == "airliner" and k == 2
    length = _u(rng, 34, 44) if sub == "airliner" else _u(rng, 58, 68)
    radius = length * (_u(rng, 0.047, 0.056) if sub == "airliner" else 0.05)
    parts.append(_fuselage(length, radius, [(0, 0.05, -0.2), (0.015, 0.5, -0.15), (0.05, 0.88, -0.05),
                                            (0.11, 1, 0), (0.7, 1, 0), (0.88, 0.55, 0.3),
                                            (1.0, 0.12, 0.7)]))
    if sub == "jumbo":  # the upper-deck hump behind the cockpit
      parts.append(_fuselage(length * 0.3, radius * 0.75,
                             [(0, 0.05, 0), (0.2, 0.9, 0), (0.7, 1, 0), (1, 0.05, 0)], width=1.1)
                   .apply_translation([0, -length * 0.3, radius * 0.45]))
    semispan = length * _u(rng, 0.42, 0.5)
    sweep = math.radians(_u(rng, 26, 36))
    dihedral = math.radians(_u(rng, 3, 7))
    root_chord = length * _u(rng, 0.16, 0.2)
    y_wing = -length / 2 + length * _u(rng, 0.36, 0.42)
    z_wing = -0.45 * radius
    tip = (semispan, y_wing + semispan * math.tan(sweep), z_wing + semispan * math.tan(dihedral))
    parts.append(P.pair_x(P.wing((0, y_wing, z_wing), tip, root_chord, root_chord * 0.28,
                                 root_chord * 0.13)))
    nacelle_r = length * (0.032 if sub == "airliner" else 0.024)
    for f in (() if t_tail else (0.34,) if sub == "airliner" else (0.27, 0.5)):
      x = f * semispan
      y_le = y_wing + x * math.tan(sweep)
      z = z_wing + x * math.tan(dihedral) - 1.1 * nacelle_r
      nacelle = P.cylinder(nacelle_r, (x, y_le - length * 0.07, z), (x, y_le + length * 0.03, z))
      pylon = P.box_between((x - 0.15 * nacelle_r, y_le - length * 0.02, z),
                            (x + 0.15 * nacelle_r, y_le + length * 0.04, z + 1.1 * nacelle_r))
      parts.append(P.pair_x(P.combine([nacelle, pylon])))
    fin_h = length * _u(rng, 0.14, 0.18)
    y_fin = length / 2 - length * 0.18
    parts.append(P.wing((0, y_fin, 0.6 * radius), (0, y_fin + fin_h * 0.9, 0.6 * radius + fin_h),
                        length * 0.15, length * 0.06, length * 0.015, vertical=True))
    if t_tail:
      y_tail, z_tail = y_fin + fin_h * 0.85, 0.6 * radius + fin_h * 0.97
      nacelle_r = length * 0.035
      y_eng = length / 2 - length * 0.3
      nacelle = P.cylinder(nacelle_r, (radius * 1.7, y_eng, radius * 0.5),
                           (radius * 1.7, y_eng + length * 0.13, radius * 0.5))
      pylon = P.box_between((radius * 0.5, y_eng + length * 0.03, radius * 0.4),
                            (radius * 1.5, y_eng + length * 0.09, radius * 0.6))
      parts.append(P.pair_x(P.combine([nacelle, pylon])))
    else:
      y_tail, z_tail = length / 2 - length * 0.15, 0.3 * radius
    parts.append(P.pair_x(P.wing((0, y_tail, z_tail),
                                 (length * 0.17, y_tail + length * 0.12, z_tail + length * 0.02),
                                 length * 0.1, length * 0.04, length * 0.012)))
  elif sub == "propeller":
    high_wing = k == 1
    length = _u(rng, 7.5, 9.5)
    radius = length * _u(rng, 0.06, 0.07)
    parts.append(_fuselage(length, radius, [(0, 0.6, 0), (0.05, 0.9, 0), (0.18, 1, 0.1), (0.42, 1, 0.1),
                                            (0.75, 0.45, 0.35), (1.0, 0.15, 0.55)], width=0.9))
    parts.append(P.ellipsoid((radius * 0.75, length * 0.13, radius * 0.7),
                             (0, -length / 2 + length * 0.3, radius * 0.75)))
    semispan = length * _u(rng, 0.58, 0.7)
    chord = length * _u(rng, 0.15, 0.18)
    y_wing = -length / 2 + length * 0.2
    z_wing = radius * 1.05 if high_wing else -radius * 0.6
    dihedral = 0.02 if high_wing else 0.09
    parts.append(P.pair_x(P.wing((0, y_wing, z_wing), (semispan, y_wing + chord * 0.1,
                                                        z_wing + semispan * dihedral),
                                 chord, chord * 0.7, chord * 0.15)))
    if high_wing:  # wing struts
      parts.append(P.pair_x(P.rod(radius * 0.06, (radius * 0.8, y_wing + chord * 0.4, -radius * 0.6),
                                  (semispan * 0.55, y_wing + chord * 0.4, z_wing))))
    spinner_y = -length / 2
    parts.append(P.cone(radius * 0.35, (0, spinner_y, 0), (0, spinner_y - radius * 0.7, 0)))
    blades = 2 if high_wing else 3
    blade_r = length * 0.13
    for b in range(blades):
      a = 2 * math.pi * b / blades + 0.4
      parts.append(P.box((blade_r, radius * 0.08, radius * 0.25),
                         (blade_r / 2 * math.cos(a), spinner_y - radius * 0.3, blade_r / 2 * math.sin(a)),
                         P.rot_y(-a)))
    # fixed landing gear
    for x in (-1, 1):
      foot = (x * radius * 1.8, -length / 2 + length * 0.28, -radius * 2.2)
      parts.append(P.rod(radius * 0.07, (x * radius * 0.5, foot[1], -radius * 0.5), foot))
      parts.append(P.wheel(radius * 0.35, radius * 0.25, foot))
    parts.append(P.wheel(radius * 0.2, radius * 0.15, (0, length / 2 - length * 0.06, -radius * 0.1)))
    y_tail = length / 2 - length * 0.17
    parts.append(P.pair_x(P.wing((0, y_tail, 0.45 * radius), (length * 0.18, y_tail + length * 0.03,
                                                              0.45 * radius),
                                 length * 0.13, length * 0.08, length * 0.015)))
    fin_h = length * _u(rng, 0.17, 0.2)
    parts.append(P.wing((0, length / 2 - length * 0.2, 0.5 * radius),
                        (0, length / 2 - length * 0.2 + fin_h * 0.7, 0.5 * radius + fin_h),
                        length * 0.18, length * 0.09, length * 0.02, vertical=True))
  elif sub == "fighter":
    twin = k == 2
    length = _u(rng, 15, 19)
    radius = length * _u(rng, 0.05, 0.06)
    parts.append(_fuselage(length, radius, [(0, 0.02, -0.1), (0.12, 0.45, -0.05), (0.3, 1, 0),
                                            (0.92, 1, 0), (1.0, 0.8, 0)], width=1.25))
    parts.append(P.ellipsoid((radius * 0.55, length * 0.12, radius * 0.75),
                             (0, -length / 2 + length * 0.25, radius * 0.65)))
    semispan = length * _u(rng, 0.27, 0.33)
    y_root = -length / 2 + length * _u(rng, 0.38, 0.45)
    root_chord = length * 0.5
    sweep = math.radians(_u(rng, 48, 58))
    y_tip = y_root + semispan * math.tan(sweep)
    tip_chord = max(length * 0.04, y_root + root_chord - y_tip - length * 0.02)
    parts.append(P.pair_x(P.wing((0, y_root, -0.2 * radius), (semispan, y_tip, -0.3 * radius),
                                 root_chord, tip_chord, radius * 0.35)))
    # intakes beside the cockpit
    parts.append(P.pair_x(P.box((radius * 0.6, length * 0.25, radius * 1.2),
                                (radius * 1.2, -length / 2 + length * 0.5, -radius * 0.1))))
    parts.append(P.cylinder(radius * 0.75, (0, length / 2 - length * 0.02, 0),
                            (0, length / 2 + length * 0.03, 0)))
    fin_h = length * _u(rng, 0.2, 0.24)
    y_fin = length / 2 - length * 0.25
    if twin:
      parts.append(P.pair_x(P.wing((radius * 0.8, y_fin, radius * 0.6),
                                   (radius * 0.8 + fin_h * 0.3, y_fin + fin_h * 0.8, radius * 0.6 + fin_h),
                                   length * 0.2, length * 0.07, length * 0.012, vertical=True)))
      parts.append(P.pair_x(P.wing((0, length / 2 - length * 0.13, 0), (length * 0.2,
                                                                         length / 2 - length * 0.04, 0),
                                   length * 0.13, length * 0.05, length * 0.01)))
    else:
      parts.append(P.wing((0, y_fin, radius * 0.8), (0, y_fin + fin_h * 1.0, radius * 0.8 + fin_h),
                          length * 0.22, length * 0.07, length * 0.012, vertical=True))
  elif sub == "glider":
    length = _u(rng, 7, 8.5)
    radius = length * 0.055
    parts.append(_fuselage(length, radius, [(0, 0.3, -0.2), (0.05, 0.8, -0.1), (0.17, 1, 0),
                                            (0.35, 0.85, 0), (0.55, 0.35, 0.3), (1.0, 0.2, 0.6)],
                           width=0.9))
    parts.append(P.ellipsoid((radius * 0.7, length * 0.12, radius * 0.7),
                             (0, -length / 2 + length * 0.15, radius * 0.6)))
    semispan = length * _u(rng, 0.9, 1.1)
    y_wing = -length / 2 + length * 0.3
    chord = length * 0.11
    parts.append(P.pair_x(P.wing((0, y_wing, radius * 0.5), (semispan, y_wing + chord * 0.35,
                                                              radius * 0.5 + semispan * 0.05),
                                 chord, chord * 0.4, chord * 0.13)))
    fin_h = length * _u(rng, 0.15, 0.18)
    y_fin = length / 2 - length * 0.12
    parts.append(P.wing((0, y_fin, 0.5 * radius), (0, y_fin + fin_h * 0.4, 0.5 * radius + fin_h),
                        length * 0.12, length * 0.07, length * 0.012, vertical=True))
    z_t = 0.5 * radius + fin_h
    parts.append(P.pair_x(P.wing((0, y_fin + fin_h * 0.4, z_t), (length * 0.14, y_fin + fin_h * 0.45, z_t),
                                 length * 0.07, length * 0.04, length * 0.008)))
  else:
    raise ValueError(sub)
  return P.combine(parts), None


# ----------------------------------------------------------------------------------------------------
# bicycle and motorbike: wheels in the yz plane, front wheel at -y.


def _bicycle(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Road, touring (mudguards, panniers), mountain, step-through city (basket), tandem and BMX bikes."""
  del k
  parts = []
  wheel_r = {"bmx": 0.26, "mountain": 0.34}.get(sub, 0.35) * _u(rng, 0.96, 1.04)
  tyre = {"mountain": 0.028, "bmx": 0.028, "road": 0.014, "touring": 0.018}.get(sub, 0.02)
  tube = {"mountain": 0.022, "bmx": 0.02}.get(sub, 0.016)
  wheelbase = {"tandem": _u(rng, 1.65, 1.8), "bmx": 0.72}.get(sub, _u(rng, 0.95, 1.08))
  front = np.array([0.0, -wheelbase / 2, wheel_r])
  rear = np.array([0.0, wheelbase / 2, wheel_r])
  spokes = 0 if sub == "bmx" else 12
  for c in (front, rear):
    parts.append(P.spoked_wheel(wheel_r, tyre, c, spokes=spokes))
    if sub == "bmx":  # mag wheels: a few thick spokes
      for a in range(5):
        ang = 2 * math.pi * a / 5
        end = c + (wheel_r - tyre) * np.array([0, math.cos(ang), math.sin(ang)])
        parts.append(P.rod(0.012, c, end))
  head = np.array([0.0, math.sin(math.radians(18)), math.cos(math.radians(18))])  # fork axis, up-back
  head_lo = front + head * wheel_r * 1.05
  head_hi = front + head * (wheel_r * 1.05 + (0.1 if sub == "bmx" else 0.16))
  # The handlebar sits at least as high as the saddle: the real Pascal3D+ bicycles all do, and the frame
  # test (tests/test_zoo.py) uses it to tell the front.
  bar_rise = {"bmx": 0.2, "city": 0.3, "road": 0.27, "touring": 0.28}.get(sub, 0.26)
  bar = front + head * (wheel_r * 1.05 + bar_rise)
  bb = np.array([0.0, rear[1] - {"bmx": 0.36, "tandem": 1.09}.get(sub, 0.43), wheel_r - 0.06])
  seat_h = {"bmx": 0.33, "city": 0.52}.get(sub, 0.5) * _u(rng, 0.95, 1.03)
  seat_top = bb + np.array([0.0, seat_h * 0.3, seat_h])
  seats = [seat_top]
  # frame
  frame = [(head_lo, head_hi), (front + [0.045, 0, 0], head_lo + [0.02, 0, 0]),
           (front - [0.045, 0, 0], head_lo - [0.02, 0, 0]), (head_hi, bar), (bb, seat_top)]
  if sub == "city":  # step-through: a low curved down tube instead of a top tube
    frame += [(head_lo, bb + [0, -0.2, 0.1]), (bb + [0, -0.2, 0.1], bb)]
  else:
    frame += [(head_lo, bb), (head_hi, seat_top - [0, seat_h * 0.04, seat_h * 0.12])]
  if sub == "tandem":
    mid = bb + np.array([0.0, 0.66, 0.0])
    seat2 = mid + np.array([0.0, seat_h * 0.3, seat_h])
    seats.append(seat2)
    frame += [(bb, mid), (seat_top - [0, seat_h * 0.04, seat_h * 0.12], seat2 - [0, seat_h * 0.04,
                                                                              seat_h * 0.12]),
              (mid, seat2), (seat_top + [0, -0.02, 0.04], seat_top + [0, 0.1, 0.06])]
    stay_from = mid
    stay_seat = seat2
    # the stoker's handlebar on the captain's seat post
    parts.append(P.rod(tube * 0.8, seat_top + [-0.22, 0.1, 0.06], seat_top + [0.22, 0.1, 0.06]))
  else:
    stay_from, stay_seat = bb, seat_top
  for x in (-0.045, 0.045):
    frame += [(stay_from + [x / 3, 0, 0], rear + [x, 0, 0]),
              (stay_seat - [0, seat_h * 0.03, seat_h * 0.1], rear + [x, 0, 0])]
  parts += [P.rod(tube, a, b) for a, b in frame]
  if sub == "mountain":  # suspension fork legs
    parts += [P.rod(tube * 1.6, front + [x, 0, 0] + head * 0.12, head_lo + [x / 2, 0, 0])
              for x in (-0.045, 0.045)]
  # saddles, cranks, pedals
  for s in seats:
    parts.append(P.rod(tube * 0.8, s, s + [0, 0.01, 0.06]))
    parts.append(P.ellipsoid((0.07, 0.13, 0.03), s + [0, 0.02, 0.08], subdivisions=1))
  for c_bb in ([bb, bb + [0, 0.66, 0]] if sub == "tandem" else [bb]):
    parts.append(P.cylinder(0.1, c_bb + [0.03, 0, 0], c_bb + [0.04, 0, 0], sections=16))
    for x, sgn in ((0.06, 1), (-0.06, -1)):
      pedal = c_bb + np.array([x, sgn * 0.12, -sgn * 0.1])
      parts.append(P.rod(0.01, c_bb + [x, 0, 0], pedal))
      parts.append(P.box((0.09, 0.05, 0.02), pedal + [x * 0.6, 0, 0]))
  # handlebars
  if sub in ("road", "touring"):  # drop bars: a cross bar and two hooks curling forward and down
    half = 0.21
    parts.append(P.rod(tube * 0.9, bar + [-half, 0, 0], bar + [half, 0, 0]))
    for x in (-half, half):
      hook = P.arc(bar + [x, -0.06, -0.06], 0.075, math.pi / 2, 3 * math.pi / 2 + 0.6, "yz", 8)
      parts.append(P.sweep(hook, tube * 0.9, normal=(1, 0, 0), sides=6))
  else:
    half = {"mountain": 0.31, "bmx": 0.25}.get(sub, 0.27)
    rise = 0.1 if sub == "bmx" else 0.0
    back = 0.12 if sub == "city" else 0.0
    if rise:
      parts.append(P.rod(tube, bar, bar + [0, 0, rise]))
    parts.append(P.sweep([bar + [-half, back, rise], bar + [-half * 0.5, 0, rise], bar + [0, 0, rise],
                          bar + [half * 0.5, 0, rise], bar + [half, back, rise]], tube, normal=(0, 0, 1)))
    if sub == "bmx":
      parts.append(P.rod(tube, bar + [-half * 0.6, 0, rise * 0.6], bar + [half * 0.6, 0, rise * 0.6]))
  if sub == "touring":  # mudguards, a rear rack and a pair of panniers
    for c in (front, rear):
      parts.append(P.sweep(P.arc(c, wheel_r + 0.03, math.radians(25), math.radians(155), "yz", 10), 0.005,
                           normal=(1, 0, 0), sides=8, power=6, aspect=5))
    parts.append(P.box((0.14, 0.38, 0.015), rear + [0, -0.04, wheel_r + 0.06]))
    parts.append(P.pair_x(P.box((0.12, 0.32, 0.3), (0.14, rear[1] - 0.02, wheel_r - 0.06))))
  if sub == "city":  # fenders, a front basket and a rear rack
    for c in (front, rear):
      arc = P.arc(c, wheel_r + 0.03, math.radians(20), math.radians(160), "yz", 10)
      if c is rear:
        arc = P.arc(c, wheel_r + 0.03, math.radians(20), math.radians(150), "yz", 10)
      parts.append(P.sweep(arc, 0.006, normal=(1, 0, 0), sides=8, power=6, aspect=6))
    basket_c = bar + np.array([0.0, -0.17, -0.12])
    parts.append(P.box((0.32, 0.22, 0.2), basket_c))
    parts.append(P.box((0.16, 0.36, 0.015), rear + [0, -0.06, wheel_r + 0.08]))
  return P.combine(parts), None


def _moto_wheel(center: np.ndarray, radius: float, tyre: float, width: float = 0.09) -> trimesh.Trimesh:
  """A motorbike wheel: a fat tyre torus around a solid rim disc."""
  return P.combine([
      P.torus(radius - tyre, tyre, center, (1, 0, 0), major_sections=24, minor_sections=8),
      P.cylinder(radius - tyre, center - [width / 4, 0, 0], center + [width / 4, 0, 0], sections=20),
      P.cylinder(0.05, center - [width * 0.6, 0, 0], center + [width * 0.6, 0, 0], sections=10)])


def _motorbike(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Sport (fairing), cruiser (V-twin, high bars), scooter, dirt and touring (screen, cases) bikes."""
  del k
  parts = []
  rw = {"scooter": 0.21, "dirt": 0.35}.get(sub, 0.31) * _u(rng, 0.96, 1.04)
  tyre = {"scooter": 0.05, "dirt": 0.055, "cruiser": 0.07}.get(sub, 0.06)
  wb = {"cruiser": 1.72, "scooter": 1.32, "touring": 1.62}.get(sub, 1.5) * _u(rng, 0.96, 1.04)
  rake = math.radians({"cruiser": 34, "scooter": 22, "dirt": 27}.get(sub, 24))
  fork_len = {"cruiser": 0.85, "dirt": 0.85, "scooter": 0.72}.get(sub, 0.7)
  front = np.array([0.0, -wb / 2, rw])
  rear = np.array([0.0, wb / 2, rw])
  parts += [_moto_wheel(front, rw, tyre), _moto_wheel(rear, rw, tyre)]
  d = np.array([0.0, math.sin(rake), math.cos(rake)])
  top = front + d * fork_len
  for x in (-0.085, 0.085):
    parts.append(P.cylinder(0.03, front + [x, 0, 0], top + [x, 0, 0], sections=8))
  parts.append(P.box((0.24, 0.08, 0.06), top))
  # handlebar: half-width, rise above the clamp, pull-back
  half, rise, back = {"cruiser": (0.42, 0.24, 0.25), "dirt": (0.4, 0.16, 0.05),
                      "sport": (0.3, 0.05, 0.08), "scooter": (0.32, 0.12, 0.02)}.get(sub, (0.36, 0.14, 0.1))
  bar_c = top + [0, 0.02, rise]
  parts.append(P.sweep([bar_c + [-half, back, 0], bar_c + [-half * 0.5, back * 0.2, 0], bar_c,
                        bar_c + [half * 0.5, back * 0.2, 0], bar_c + [half, back, 0]], 0.016,
                       normal=(0, 0, 1)))
  if rise > 0.1:
    parts.append(P.rod(0.018, top, bar_c))
  seat_z = {"cruiser": rw + 0.3, "dirt": rw + 0.5, "scooter": rw + 0.48}.get(sub, rw + 0.42)
  # front mudguard over the wheel (the dirt bike's sits high under the handlebar)
  if sub == "dirt":
    guard = P.arc(front + d * 0.45, 0.3, math.radians(200), math.radians(300), "yz", 6)
    parts.append(P.sweep(guard, 0.012, normal=(1, 0, 0), aspect=7, power=6, sides=8))
  else:
    parts.append(P.sweep(P.arc(front, rw + 0.03, math.radians(30), math.radians(150), "yz", 8), 0.01,
                         normal=(1, 0, 0), aspect=9, power=6, sides=8))
  if sub == "scooter":
    floor_z = rw + 0.05
    parts.append(P.box_between((-0.17, front[1] + 0.35, floor_z - 0.08), (0.17, rear[1] - 0.3, floor_z)))
    # front leg shield and steering column
    parts.append(P.extrude([(front[1] + 0.22, floor_z - 0.08), (front[1] + 0.38, floor_z - 0.08),
                            (front[1] + 0.38, floor_z + 0.1), (top[1] + 0.12, top[2] - 0.05),
                            (top[1] - 0.02, top[2] - 0.05)], 0.42, "yz"))
    parts.append(P.ellipsoid((0.19, 0.45, 0.22), (0, rear[1] - 0.2, rw + 0.24)))
    parts.append(P.ellipsoid((0.16, 0.35, 0.07), (0, rear[1] - 0.28, seat_z)))
    parts.append(P.ellipsoid((0.1, 0.08, 0.08), top + [0, -0.06, 0.0]))
    return P.combine(parts), None
  # engine block between the wheels, and the swing arm
  eng_c = np.array([0.0, 0.02, rw + 0.1])
  parts.append(P.box((0.32, 0.5, 0.4), eng_c))
  if sub == "cruiser":  # V-twin cylinders
    for a in (-0.45, 0.45):
      c0 = eng_c + [0, 0, 0.15]
      parts.append(P.cylinder(0.09, c0, c0 + [0, 0.32 * math.sin(a), 0.32 * math.cos(a)], sections=10))
  for x in (-0.1, 0.1):
    parts.append(P.rod(0.03, eng_c + [x, 0.2, -0.05], rear + [x, 0, 0]))
  # frame spine from the steering head back over the engine
  parts.append(P.rod(0.035, top - d * 0.1, eng_c + [0, 0.35, 0.3]))
  tank_c = np.array([0.0, top[1] + 0.38, seat_z + 0.03])
  parts.append(P.ellipsoid((0.17, 0.27, 0.13), tank_c))
  seat_len = 0.75 if sub == "dirt" else 0.55
  parts.append(P.ellipsoid((0.15, seat_len / 2, 0.06), (0, tank_c[1] + 0.2 + seat_len / 2, seat_z)))
  # rear frame under the seat and the rear mudguard
  parts.append(P.box_between((-0.12, eng_c[1] + 0.15, seat_z - 0.2), (0.12, rear[1] - 0.05,
                                                                       seat_z - 0.05)))
  parts.append(P.sweep(P.arc(rear, rw + 0.04, math.radians(40), math.radians(130), "yz", 8), 0.01,
                       normal=(1, 0, 0), aspect=10, power=6, sides=8))
  # exhaust on the right (+x) only, as on most bikes: the model is not mirror symmetric
  muffler_z = seat_z - 0.1 if sub == "dirt" else rw - 0.02
  pipe = [eng_c + [0.14, -0.2, 0.0], eng_c + [0.2, 0.1, -0.16], rear + [0.2, -0.25, muffler_z - rw],
          rear + [0.2, 0.15, muffler_z - rw + 0.05]]
  parts.append(P.sweep(pipe, 0.04, normal=(1, 0, 0), sides=8))
  if sub == "cruiser":
    parts.append(P.sweep([p * [-1, 1, 1] for p in pipe], 0.04, normal=(1, 0, 0), sides=8))
  # headlight
  parts.append(P.ellipsoid((0.09, 0.08, 0.09), top + [0, -0.1, -0.08]))
  if sub in ("sport", "touring"):
    # fairing around the steering head, and a windscreen (tall on the tourer)
    rings = []
    for t, w, h in ((0.0, 0.05, 0.05), (0.12, 0.18, 0.18), (0.4, 0.25, 0.26), (0.75, 0.22, 0.26)):
      c = top + [0, -0.25 + t, -0.2 - t * 0.35]
      rings.append(P.ring_xz(P.superellipse(w, h, 12, 2.5), c[1], c[2]))
    parts.append(P.loft(rings))
    screen_h = 0.42 if sub == "touring" else 0.25
    parts.append(P.box((0.4 if sub == "touring" else 0.26, 0.015, screen_h),
                       top + [0, -0.08 + screen_h * 0.25, screen_h * 0.45], P.rot_x(-0.45)))
  if sub == "sport":  # lower fairing over the engine and an upswept tail
    parts.append(P.ellipsoid((0.2, 0.4, 0.22), eng_c + [0, -0.05, 0.05]))
    parts.append(P.ellipsoid((0.11, 0.3, 0.08), (0, rear[1] - 0.2, seat_z + 0.07), rotation=P.rot_x(0.3)))
  if sub == "touring":  # panniers and a top case
    parts.append(P.pair_x(P.box((0.16, 0.45, 0.32), (0.28, rear[1] - 0.12, rw + 0.15))))
    parts.append(P.box((0.36, 0.3, 0.26), (0, rear[1] + 0.02, seat_z + 0.12)))
  if sub == "dirt":  # number plate on the fork
    parts.append(P.box((0.22, 0.02, 0.18), top + [0, -0.07, -0.12], P.rot_x(-rake)))
  return P.combine(parts), None


# ----------------------------------------------------------------------------------------------------
# car, bus, train: side profiles (y, z) extruded across x, front at -y.


def _wheels(radius: float, width: float, track: float, ys: Sequence[float]) -> trimesh.Trimesh:
  """Pairs of wheels at the given axle positions y, their outer faces at x = +-track / 2."""
  return P.combine([P.wheel(radius, width, (x * (track - width) / 2, y, radius))
                    for y in ys for x in (-1, 1)])


def _arched_bottom(y_from: float, y_to: float, z: float, axle_groups: Sequence[Sequence[float]],
                   arch_r: float, wheel_r: float) -> list[tuple[float, float]]:
  """The bottom edge of a side profile from front to rear, with a wheel arch over every axle group.

  Cutting the arches out of the profile (rather than hiding the wheels in the body) keeps the wheels
  visible in renders, which is much of what makes a box read as a car or a bus. The axles of a group
  (tandem axles) share one long arch.
  """
  points = [(y_from, z)]
  for group in sorted(axle_groups):
    first, last = min(group), max(group)
    points.append((first - arch_r, z))
    points += [(first + arch_r * math.cos(t), wheel_r + arch_r * math.sin(t))
               for t in np.linspace(math.pi, math.pi / 2, 5)]
    points += [(last + arch_r * math.cos(t), wheel_r + arch_r * math.sin(t))
               for t in np.linspace(math.pi / 2, 0.0, 5)]
    points.append((last + arch_r, z))
  return points + [(y_to, z)]


def _car(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Sedans, hatchbacks, SUVs, a pickup (tailgate down), a sports car, a van and a wagon: extruded side
  profiles."""
  # length, width, roof height, hood height, ground clearance, wheel radius
  dims = {"sedan": (4.7, 1.72, 1.45, 0.95, 0.25, 0.32), "hatchback": (4.0, 1.62, 1.48, 0.95, 0.24, 0.31),
          "suv": (4.7, 1.8, 1.8, 1.12, 0.35, 0.38), "pickup": (5.3, 1.85, 1.85, 1.15, 0.4, 0.4),
          "sports": (4.4, 1.8, 1.18, 0.78, 0.2, 0.33), "van": (4.9, 1.8, 1.95, 1.05, 0.25, 0.33),
          "wagon": (4.75, 1.72, 1.5, 0.95, 0.25, 0.32)}[sub]
  jitter = [_u(rng, 0.95, 1.05) for _ in range(4)]
  if k == 2 and sub in ("sedan", "hatchback"):  # a lower coupe-like sedan, a taller hatchback
    jitter[2] *= 0.92 if sub == "sedan" else 1.08
  length, width, height, hood = (d * j for d, j in zip(dims[:4], jitter))
  clearance, wheel_r = dims[4], dims[5]
  y0, y1 = -length / 2, length / 2
  deck = hood + (0.08 if sub in ("sedan", "sports") else 0.0)
  nose = {"sports": 0.3, "van": 0.15}.get(sub, 0.22)
  wheelbase = length * {"van": 0.62, "pickup": 0.62}.get(sub, 0.6)
  axles = (-wheelbase / 2 - length * 0.01, wheelbase / 2 - length * 0.01)
  bottom = _arched_bottom(y0 + 0.08, y1 - 0.08, clearance, [[a] for a in axles], wheel_r + 0.05, wheel_r)
  # greenhouse: windscreen base, roof front, roof rear, rear window base (as offsets along y)
  hood_len = {"sedan": 1.6, "hatchback": 1.05, "suv": 1.15, "pickup": 1.45, "sports": 1.75,
              "van": 0.8, "wagon": 1.35}[sub] * _u(rng, 0.92, 1.08)
  y_ws = y0 + hood_len
  # The windscreen is raked more than the rear window: its run is this multiple of its rise.
  y_rf = y_ws + {"van": 1.3, "sports": 2.0, "pickup": 0.9, "suv": 1.1, "sedan": 1.7}.get(sub, 1.5) * (
      height - hood)
  if sub == "sedan":
    y_rw = y1 - _u(rng, 0.65, 0.8) if k == 1 else y1 - _u(rng, 0.5, 0.6)
    y_rr = y_rw - 0.6
  elif sub == "hatchback":
    y_rw, y_rr = y1 - 0.05, y1 - (0.35 if k == 1 else 0.6)
  elif sub in ("suv", "wagon", "van"):
    y_rw, y_rr = y1 - 0.02, y1 - 0.15
  elif sub == "pickup":
    y_rw = y_ws + 1.75
    y_rr = y_rw - 0.1
  else:  # sports: fastback
    y_rw, y_rr = y1 - 0.35, y_rf + 0.55
  # The bonnet slopes down towards the nose by `drop`, while the boot deck stays level.
  drop = {"pickup": 0.04, "van": 0.12}.get(sub, 0.09)
  rear = [(y1, clearance + 0.12), (y1, deck - 0.06), (y1 - 0.12, deck)]
  if sub == "pickup":  # the body steps down behind the cab to the floor of the load bed
    y_bed, bed_floor = y_rw + 0.05, clearance + 0.55
    rear = [(y1, clearance + 0.12), (y1, bed_floor), (y_bed, bed_floor), (y_bed, deck)]
  parts = [P.extrude([(y0, clearance + 0.12)] + bottom + rear +
                     [(y_ws, hood), (y0 + nose + 0.25, hood - drop), (y0 + 0.04, hood - drop - nose)],
                     width, "yz")]
  greenhouse = [(y_ws, hood - 0.02), (y_rf, height), (y_rr, height), (y_rw, deck - 0.02)]
  gh_width = width * (0.9 if sub in ("suv", "van", "pickup") else 0.84)
  parts.append(P.extrude(greenhouse, gh_width, "yz"))
  parts.append(_wheels(wheel_r, 0.22, width - 0.04, axles))
  # lights and bumpers
  for y, z in ((y0 - 0.01, hood - nose - 0.06), (y1 + 0.01, deck - 0.12)):
    parts.append(P.pair_x(P.box((0.3, 0.04, 0.1), (width / 2 - 0.22, y, z))))
    parts.append(P.box((width * 0.96, 0.1, 0.14), (0, y - math.copysign(0.03, y), clearance + 0.12)))
  # side mirrors
  parts.append(P.pair_x(P.box((0.1, 0.08, 0.1), (width / 2 + 0.03, y_ws + 0.15, hood + 0.12))))
  if sub == "pickup":  # the load bed: sides, front wall and the tailgate, folded down
    bed_top = hood + 0.12
    parts.append(P.pair_x(P.box_between((width / 2 - 0.08, y_bed, bed_floor), (width / 2, y1, bed_top))))
    parts.append(P.box_between((-width / 2, y_bed, bed_floor), (width / 2, y_bed + 0.08, bed_top)))
    parts.append(P.box_between((-width / 2 + 0.04, y1, bed_floor - 0.06), (width / 2 - 0.04, y1 + 0.5,
                                                                           bed_floor)))
  if sub == "suv":  # roof rails and a spare wheel on the tailgate
    parts.append(P.pair_x(P.box((0.05, (y_rr - y_rf) * 0.9, 0.06), (gh_width / 2 - 0.1, (y_rf + y_rr) / 2,
                                                                     height + 0.04))))
    if k == 2:
      parts.append(P.wheel(wheel_r, 0.22, (0, y1 + 0.12, deck - 0.15), axis=(0, 1, 0)))
  if sub == "sports":  # rear wing
    parts.append(P.box((width * 0.85, 0.3, 0.04), (0, y1 - 0.2, deck + 0.22)))
    parts.append(P.pair_x(P.box((0.05, 0.1, 0.22), (width * 0.3, y1 - 0.2, deck + 0.1))))
  return P.combine(parts), None


def _bus(rng: np.random.Generator, sub: str, k: int) -> Built:
  """City buses, an open-top double-decker, an articulated bus, a coach and a bonneted school bus.

  Every bus has a clearly different front and back even at 32^3 voxels (turned half way round about z,
  its occupancy grid overlaps the original by IoU <= 0.8, see tests/test_zoo.py): a raked windscreen
  or a bonnet in front; roof equipment (air conditioning, engine cooling), a raised rear deck or a roof
  over the front of an open top, and a rear overhang whose underside rises, at the back.
  """
  length = {"double_decker": 11.0, "articulated": 18.0, "coach": 12.5, "school": 11.0}.get(sub, 12.0)
  length *= _u(rng, 0.94, 1.06)
  width = 2.55
  height = {"double_decker": 4.3, "coach": 3.6, "school": 3.1}.get(sub, 3.1) * _u(rng, 0.97, 1.03)
  base = 0.4
  wheel_r = 0.52
  y0, y1 = -length / 2, length / 2
  parts = []
  y_body = y0 + (2.0 if sub == "school" else 0.0)  # the school bus has a bonnet in front of the body
  # Windscreen rake: how far the roof's front edge sits behind the bottom of the windscreen.
  rake = {"coach": 1.3, "city": 1.1 if k == 1 else 0.25, "articulated": 2.0, "double_decker": 0.6}.get(
      sub, 0.15)
  arch = wheel_r + 0.08
  deck = 2.35  # the double-decker's upper deck floor
  step = 0.6  # how much lower the coach's roof is over the driver than over the raised rear deck
  # The rear overhang's underside rises towards the back (the engine bay's departure angle).
  tail = [(y1 - 1.4, base), (y1, base + 0.5)]
  if sub == "articulated":  # two bodies joined by a narrower, lower bellows; the front one is longer
    joint = y0 + length * 0.6
    axles = (y0 + 2.6, joint - 1.6, y1 - 2.8)
    front_body = (_arched_bottom(y0 + 0.15, joint - 0.7, base, [[axles[0]], [axles[1]]], arch, wheel_r) +
                  [(joint - 0.7, height), (y0 + rake + 0.3, height), (y0 + rake, height - 0.15),
                   (y0, height * 0.35), (y0, base + 0.3)])
    rear_body = (_arched_bottom(joint + 0.7, y1, base, [[axles[2]]], arch, wheel_r)[:-1] + tail +
                 [(y1, height - 0.2), (y1 - 0.2, height), (joint + 0.7, height)])
    parts += [P.extrude(front_body, width, "yz"), P.extrude(rear_body, width, "yz"),
              P.box_between((-width * 0.3, joint - 0.8, base + 0.4), (width * 0.3, joint + 0.8,
                                                                        height - 0.5))]
    # roof pods: (y from, y to, height, width fraction): the engine tower at the back, air conditioning
    roof_pods = [(y1 - 3.6, y1, 0.85, 1.0), (joint - 5.5, joint - 1.5, 0.45, 0.8)]
  else:
    axles = {"coach": (y0 + 2.7, y1 - 3.4, y1 - 2.1), "school": (y0 + 1.3, y1 - 3.0)}.get(
        sub, (y0 + 2.6, y1 - 3.3))
    # The school bus's front axle sits under the bonnet, outside the body's profile; the coach's tandem
    # rear axles share one arch.
    groups = [[a] for a in axles if a > y_body + arch]
    if sub == "coach":
      groups = [[axles[0]], list(axles[1:])]
    if sub == "coach":  # a raised rear deck behind a lower, steeply raked front: the roof steps up
      top = [(y1, height - 0.25), (y1 - 0.25, height), (y0 + 5.0, height), (y0 + 4.0, height - step),
             (y_body + rake + 0.4, height - step), (y_body + rake, height - step - 0.25)]
    elif sub == "double_decker":  # an open top, roofed over the front half
      y_open = y0 + length * _u(rng, 0.45, 0.5)
      top = [(y1, deck), (y_open, deck), (y_open, height), (y_body + rake + 0.4, height),
             (y_body + rake, height - 0.3), (y_body + rake * 0.6, deck + 0.1), (y_body, deck - 0.3)]
    else:
      top = [(y1, height - 0.2), (y1 - 0.2, height), (y_body + rake + 0.3, height),
             (y_body + rake, height - 0.2)]
    front = [(y_body, height * 0.42), (y_body, base + 0.3)] if sub != "double_decker" else \
        [(y_body, base + 0.3)]
    profile = _arched_bottom(y_body + 0.1, y1, base, groups, arch, wheel_r)[:-1] + tail + top + front
    parts.append(P.extrude(profile, width, "yz"))
    if sub == "double_decker":  # waist-high walls around the open deck, and rows of seats
      wall = deck + 0.9
      parts.append(P.pair_x(P.box_between((width / 2 - 0.08, y_open - 0.1, deck), (width / 2, y1, wall))))
      parts.append(P.box_between((-width / 2, y1 - 0.08, deck), (width / 2, y1, wall)))
      for y in np.arange(y_open + 0.5, y1 - 0.6, 0.85):
        parts.append(P.pair_x(P.box_between((0.15, y, deck), (width / 2 - 0.1, y + 0.12, deck + 0.9))))
    roof_pods = {"city": [(y1 - 3.8, y1, 0.75, 1.0), (y1 - 7.0, y1 - 4.3, 0.4, 0.7)] if k == 1 else
                         [(y1 - 4.0, y1, 0.75, 1.0)],
                 "coach": [(y1 - 5.5, y1 - 0.3, 0.3, 0.75)]}.get(sub, [])
  for ya, yb, h, w in roof_pods:  # sloped at the front end
    parts.append(P.extrude([(ya, height - 0.05), (yb, height - 0.05), (yb, height + h),
                            (ya + h * 1.5, height + h)], width * w, "yz"))
  if sub == "school":
    parts.append(P.extrude([(y0, base + 0.15), (y_body + 0.1, base), (y_body + 0.1, 1.8),
                            (y0 + 0.4, 1.65), (y0, 1.35)], width * 0.8, "yz"))
  parts.append(_wheels(wheel_r, 0.32, width - 0.04, axles))
  # front bumper; the second city bus carries a bike rack folded down in front of it
  parts.append(P.box((width * 0.95, 0.2, 0.35), (0, y0 + 0.05, base + 0.25)))
  if sub == "city" and k == 2:
    parts.append(P.box_between((-width * 0.38, y_body - 0.8, base + 0.35), (width * 0.38, y_body - 0.1,
                                                                           base + 0.5)))
    parts.append(P.pair_x(P.box_between((width * 0.3, y_body - 0.8, base + 0.35),
                                        (width * 0.38, y_body - 0.1, base + 1.1))))
  # window bands along both sides (one per deck), proud of the body so they show in renders
  bands = ((1.45, 2.2), (deck + 0.2, height - 0.2)) if sub == "double_decker" else \
      ((height * 0.5, height * 0.83),)
  y_w0 = y_body + rake + 0.9
  for i, (z_lo, z_hi) in enumerate(bands):
    y_end = y_open - 0.3 if i == 1 else y1 - 0.4
    parts.append(P.pair_x(P.box_between((width / 2 - 0.01, y_w0, z_lo), (width / 2 + 0.03, y_end, z_hi))))
  # destination sign at the top of the windscreen, whose line runs from (y, z) = ws_lo up to ws_hi
  ws_lo, ws_hi = {"articulated": ((y0, height * 0.35), (y0 + rake, height - 0.15)),
                  "coach": ((y_body, height * 0.42), (y_body + rake, height - step - 0.25)),
                  "double_decker": ((y_body, base), (y_body, deck - 0.3))}.get(
                      sub, ((y_body, height * 0.42), (y_body + rake, height - 0.2)))
  parts.append(P.box((width * 0.9, 0.06, 0.12), (0, ws_hi[0] + 0.05, ws_hi[1] - 0.1)))
  # mirrors on arms at the front corners, where the windscreen is at 70 % of the height
  z_m = min(height * 0.7, ws_hi[1] - 0.2)
  y_m = ws_lo[0] + (ws_hi[0] - ws_lo[0]) * max(0.0, z_m - ws_lo[1]) / (ws_hi[1] - ws_lo[1])
  parts.append(P.pair_x(P.combine([P.box_between((width / 2 - 0.1, y_m - 0.22, z_m - 0.04),
                                                  (width / 2 + 0.2, y_m + 0.05, z_m + 0.04)),
                                    P.box((0.1, 0.12, 0.4), (width / 2 + 0.2, y_m - 0.2, z_m - 0.2))])))
  return P.combine(parts), None


def _bogie(y: float, wheel_r: float = 0.45, gauge: float = 1.5, spacing: float = 2.4) -> trimesh.Trimesh:
  """A two-axle bogie centred at `y`: side frames and four wheels."""
  parts = [P.pair_x(P.box((0.2, spacing + 0.9, 0.35), (gauge / 2 + 0.12, y, wheel_r + 0.05)))]
  for dy in (-spacing / 2, spacing / 2):
    for x in (-1, 1):
      parts.append(P.cylinder(wheel_r, (x * (gauge / 2 - 0.08), y + dy, wheel_r),
                              (x * (gauge / 2 + 0.04), y + dy, wheel_r), sections=14))
  return P.combine(parts)


def _train(rng: np.random.Generator, sub: str, k: int) -> Built:
  """A steam locomotive with tender, a diesel road switcher, a high-speed power car and a carriage."""
  del k
  width = 3.0 * _u(rng, 0.96, 1.04)
  parts = []
  symmetry = None
  if sub == "steam":
    length = _u(rng, 20.0, 23.0)
    y0, y1 = -length / 2, length / 2
    y_cab = y0 + length * 0.42
    y_tender = y_cab + 3.0
    boiler_r, boiler_z = 0.85, 2.45
    parts.append(P.box_between((-1.3, y0 + 0.6, 1.0), (1.3, y_tender, 1.45)))
    parts.append(P.cylinder(boiler_r, (0, y0 + 0.9, boiler_z), (0, y_cab, boiler_z), sections=20))
    parts.append(P.cylinder(boiler_r * 1.05, (0, y0 + 0.8, boiler_z), (0, y0 + 2.2, boiler_z), sections=20))
    parts.append(P.cylinder(0.3, (0, y0 + 1.5, boiler_z), (0, y0 + 1.5, 4.0), sections=12))
    parts.append(P.cone(0.45, (0, y0 + 1.5, 3.9), (0, y0 + 1.5, 4.6), sections=12)
                 .apply_transform(_flip_cone_matrix(y0 + 1.5, 4.25)))
    parts.append(P.ellipsoid((0.45, 0.6, 0.45), (0, y0 + length * 0.25, boiler_z + boiler_r)))
    parts.append(P.box_between((-width / 2, y_cab, 1.2), (width / 2, y_tender - 0.2, 3.9)))
    parts.append(P.box_between((-width / 2 - 0.1, y_cab - 0.2, 3.9), (width / 2 + 0.1, y_tender, 4.15)))
    parts.append(P.box_between((-width / 2 + 0.05, y_tender + 0.3, 1.1), (width / 2 - 0.05, y1, 3.4)))
    drivers = np.linspace(y0 + length * 0.19, y_cab - 0.6, 3)
    for y in drivers:
      parts.append(P.pair_x(P.cylinder(0.85, (1.0, y, 0.85), (1.2, y, 0.85), sections=18)))
    parts.append(P.pair_x(P.box((0.08, drivers[-1] - drivers[0], 0.12), (1.25, drivers.mean(), 0.6))))
    for y in (y0 + 1.6, y0 + 2.8):
      parts.append(P.pair_x(P.cylinder(0.45, (0.9, y, 0.45), (1.05, y, 0.45), sections=12)))
    parts.append(_bogie(y_tender + 1.8))
    parts.append(_bogie(y1 - 1.8))
    # cow catcher at the front
    parts.append(P.extrude([(y0 - 1.0, 0.15), (y0 + 0.7, 0.15), (y0 + 0.7, 1.2)], width * 0.85, "yz"))
  elif sub == "diesel":  # a road switcher: cab near the front, a low short hood ahead, a long hood behind
    length = _u(rng, 18.0, 21.0)
    y0, y1 = -length / 2, length / 2
    deck, roof = 1.5, _u(rng, 4.2, 4.4)
    short_hood = _u(rng, 2.6, 3.4)
    y_cab = y0 + 0.8 + short_hood
    y_cab1 = y_cab + 3.3
    parts.append(P.box_between((-width / 2, y0 + 0.3, 1.1), (width / 2, y1 - 0.3, deck)))  # frame
    parts.append(P.box_between((-width / 2, y_cab, deck), (width / 2, y_cab1, roof - 0.2)))  # cab
    parts.append(P.extrude([(-width / 2 - 0.05, 0.0), (width / 2 + 0.05, 0.0), (width / 2 + 0.05, 0.15),
                            (0.0, 0.3), (-width / 2 - 0.05, 0.15)], 3.3, "xz", offset=y_cab + 1.5)
                 .apply_translation([0.0, 0.0, roof - 0.25]))  # cab roof, peaked
    hood_w = 0.62 * width
    parts.append(P.extrude([(y0 + 0.7, deck), (y_cab, deck), (y_cab, 3.1), (y0 + 1.2, 3.1),
                            (y0 + 0.7, 2.7)], hood_w, "yz"))  # short hood, rounded nose
    long_top = roof - 0.35
    parts.append(P.box_between((-hood_w / 2, y_cab1, deck), (hood_w / 2, y1 - 0.7, long_top)))
    for y in np.linspace(y1 - 5.5, y1 - 1.6, 3):  # radiator fans on the long hood
      parts.append(P.cylinder(0.45, (0, y, long_top - 0.05), (0, y, long_top + 0.12), sections=14))
    parts.append(P.box((0.5, 0.8, 0.35), (0, y_cab1 + 2.0, long_top + 0.15)))  # exhaust stack
    for y in (y0 + 0.1, y1 - 0.1):  # end beams
      parts.append(P.box((width * 0.9, 0.4, 0.6), (0, y, 1.05)))
    parts.append(P.extrude([(y0 - 0.3, 0.2), (y0 + 0.4, 0.2), (y0 + 0.4, 0.85)], width * 0.9, "yz"))  # plough
    parts.append(_bogie(y0 + 4.2, wheel_r=0.5))
    parts.append(_bogie(y1 - 4.2, wheel_r=0.5))
    parts.append(P.box_between((-1.0, y0 + 6.4, 0.55), (1.0, y1 - 6.4, 1.1)))  # fuel tank
  elif sub == "high_speed":
    length = _u(rng, 23.0, 26.0)
    height = 3.8
    y0, y1 = -length / 2, length / 2
    nose_len = _u(rng, 6.0, 8.0)
    rings = []
    # the nose: sections shrink and drop towards the tip
    for t in (0.0, 0.04, 0.12, 0.25, 0.45, 0.7, 1.0):
      w = width / 2 * (0.12 + 0.88 * math.sqrt(t))
      h = (height - 0.9) / 2 * (0.12 + 0.88 * t ** 0.7)
      zc = 0.9 + h + (1.0 - t) * 0.05
      rings.append(P.ring_xz(P.superellipse(w, h, 16, 2.8), y0 + t * nose_len, zc))
    rings.append(P.ring_xz(P.superellipse(width / 2, (height - 0.9) / 2, 16, 2.8), y1, 0.9 +
                           (height - 0.9) / 2))
    parts.append(P.loft(rings))
    parts.append(_bogie(y0 + nose_len, wheel_r=0.46))
    parts.append(_bogie(y1 - 3.0, wheel_r=0.46))
    # pantograph on the roof (a raised diamond of rods) towards the rear
    base = np.array([0.0, y1 - 5.0, height])
    parts.append(P.box((1.2, 1.2, 0.15), base + [0, 0, 0.05]))
    parts.append(P.rod(0.05, base + [0, -0.6, 0.1], base + [0, 0.5, 1.0]))
    parts.append(P.rod(0.05, base + [0, 0.5, 1.0], base + [0, -0.3, 1.6]))
    parts.append(P.box((1.6, 0.15, 0.06), base + [0, -0.3, 1.62]))
  elif sub == "carriage":
    length = _u(rng, 20.0, 24.0)
    height = _u(rng, 3.9, 4.2)
    y0, y1 = -length / 2, length / 2
    # the cross-section: straight sides and a rounded roof
    section = [(-width / 2, 1.1), (width / 2, 1.1), (width / 2, height - 0.6)]
    section += [(width / 2 * math.cos(t), height - 0.6 + 0.6 * math.sin(t))
                for t in np.linspace(0.15, math.pi - 0.15, 9)]
    section += [(-width / 2, height - 0.6)]
    parts.append(P.extrude(section, length, "xz"))
    parts.append(P.pair_x(P.box_between((width / 2 - 0.01, y0 + 1.5, 2.1), (width / 2 + 0.03, y1 - 1.5,
                                                                             2.9))))
    for y in (y0, y1):  # gangway bellows at both ends
      parts.append(P.box((1.4, 0.6, 2.4), (0, y, 2.4)))
    parts.append(_bogie(y0 + 3.0))
    parts.append(_bogie(y1 - 3.0))
    symmetry = "rotational-z-2"
  else:
    raise ValueError(sub)
  return P.combine(parts), symmetry


def _flip_cone_matrix(y: float, z: float) -> np.ndarray:
  """Turns a part upside down about the horizontal line (x, y, z) = (*, y, z): a flared chimney top."""
  m = np.eye(4)
  m[:3, :3] = P.rot_x(math.pi)
  m[:3, 3] = (0.0, 2 * y, 2 * z)
  return m


# ----------------------------------------------------------------------------------------------------
# boat: hull along y, bow at -y.


def _hull(length: float, beam: float, sheer: float, keel: float, stations: Sequence[tuple[float, ...]],
          shell: float = 0.0, vee: float = 1.0, n: int = 12) -> trimesh.Trimesh:
  """A lofted hull.

  Args:
    length: bow (-y) to stern (+y).
    beam: maximum width.
    sheer: height of the gunwale (deck edge) amidships; z = 0 is the waterline-ish reference.
    keel: depth of the keel below 0 (a positive number).
    stations: (t, beam factor, sheer rise, keel rise): t in [0, 1] from bow to stern; rises are added
      to the sheer and keel heights (bows rise).
    shell: 0 for a closed, decked hull; otherwise an open boat whose wall is this fraction of the local
      section (the inside is the outer section shrunk towards the gunwale centre).
    vee: section shape exponent: < 1 gives a rounder bilge, > 1 a sharper vee.
    n: points across the bottom of each section.

  Returns:
    The closed hull (an open boat is still a closed solid: its wall).
  """
  phi = np.linspace(-math.pi / 2, math.pi / 2, n)
  rings = []
  for t, b, s_rise, k_rise in stations:
    half = max(b, 0.01) * beam / 2
    top = sheer + s_rise
    bottom = -keel + k_rise
    x = half * np.sin(phi)
    z = top - (top - bottom) * np.cos(phi) ** vee
    outer = np.stack([x, z], 1)
    if shell:
      inner = np.stack([x * (1 - shell), top - (top - z) * (1 - shell)], 1)[::-1]
      section = np.concatenate([outer, inner])
    else:
      section = outer
    rings.append(P.ring_xz(section, -length / 2 + t * length))
  return P.loft(rings)


def _boat(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Sailboats (sloop, ketch), a motorboat, an open rowing boat, a canoe and a container ship."""
  parts = []
  symmetry = None
  if sub in ("sailboat", "motorboat"):
    length = _u(rng, 9, 12) if sub == "sailboat" else _u(rng, 7, 9)
    beam = length * _u(rng, 0.3, 0.34)
    sheer, keel = length * 0.09, length * 0.07
    stations = [(0.0, 0.03, length * 0.03, length * 0.06), (0.12, 0.55, length * 0.018, length * 0.03),
                (0.35, 0.95, 0.005, 0.0), (0.6, 1.0, 0.0, 0.0), (1.0, 0.85, length * 0.006, length * 0.035)]
    if sub == "motorboat":  # a fine, high bow and a full-width flat transom
      stations = [(0.0, 0.02, length * 0.05, length * 0.08), (0.15, 0.45, length * 0.03, length * 0.035),
                  (0.35, 0.85, 0.01, 0.005), (0.6, 1.0, 0.0, 0.0), (1.0, 0.98, 0.0, 0.0)]
    parts.append(_hull(length, beam, sheer, keel, stations, vee=1.6 if sub == "motorboat" else 1.0))
    if sub == "sailboat":
      y_mast = -length / 2 + length * _u(rng, 0.33, 0.4)
      mast_h = length * _u(rng, 1.15, 1.45) * (1.0 if k == 1 else 0.9)
      parts.append(P.box_between((-beam * 0.3, y_mast - length * 0.05, sheer),
                                 (beam * 0.3, y_mast + length * 0.3, sheer + length * 0.06)))
      parts.append(P.cylinder(length * 0.012, (0, y_mast, sheer), (0, y_mast, sheer + mast_h), sections=8))
      boom_z = sheer + length * 0.12
      boom_end = -length / 2 + length * 0.92
      parts.append(P.cylinder(length * 0.008, (0, y_mast, boom_z), (0, boom_end, boom_z), sections=8))
      parts.append(P.extrude([(y_mast + 0.1, boom_z + 0.05), (boom_end, boom_z + 0.05),
                              (y_mast + 0.1, sheer + mast_h * 0.97)], length * 0.004, "yz"))
      jib_foot = -length / 2 + length * 0.04
      jib_top = sheer + mast_h * 0.85
      parts.append(P.extrude([(jib_foot, sheer + length * 0.03), (y_mast - 0.15, sheer + length * 0.04),
                              (y_mast - 0.15, jib_top)], length * 0.004, "yz"))
      if k == 2:  # a ketch: a second, shorter mizzen mast and sail near the stern
        y_miz = length / 2 - length * 0.15
        miz_h = mast_h * 0.55
        parts.append(P.cylinder(length * 0.01, (0, y_miz, sheer), (0, y_miz, sheer + miz_h), sections=8))
        parts.append(P.extrude([(y_miz + 0.1, boom_z + 0.05), (length / 2 + length * 0.05, boom_z + 0.05),
                                (y_miz + 0.1, sheer + miz_h * 0.95)], length * 0.004, "yz"))
      # fin keel and rudder
      parts.append(P.wing((0, y_mast + length * 0.05, -keel * 0.5), (0, y_mast + length * 0.09,
                                                                     -keel - length * 0.12),
                          length * 0.16, length * 0.1, length * 0.02, vertical=True))
      parts.append(P.wing((0, length / 2 - length * 0.12, -keel * 0.4),
                          (0, length / 2 - length * 0.1, -keel - length * 0.05),
                          length * 0.07, length * 0.05, length * 0.01, vertical=True))
    else:
      y_cab = -length / 2 + length * 0.3
      cabin = [(y_cab, sheer), (y_cab + length * 0.45, sheer), (y_cab + length * 0.45, sheer + length * 0.13),
               (y_cab + length * 0.18, sheer + length * 0.14), (y_cab + length * 0.06, sheer + length * 0.09)]
      parts.append(P.extrude(cabin, beam * 0.7, "yz"))
      parts.append(P.box((beam * 0.72, length * 0.01, length * 0.05),
                         (0, y_cab + length * 0.075, sheer + length * 0.12), P.rot_x(-0.8)))
      # outboard motor on the transom
      y_t = length / 2
      parts.append(P.box_between((-length * 0.04, y_t, sheer - length * 0.02),
                                 (length * 0.04, y_t + length * 0.08, sheer + length * 0.07)))
      parts.append(P.box_between((-length * 0.015, y_t + length * 0.02, -keel - length * 0.02),
                                 (length * 0.015, y_t + length * 0.05, sheer)))
      parts.append(P.box((beam * 0.9, length * 0.02, length * 0.02), (0, y_cab + length * 0.6,
                                                                      sheer + length * 0.01)))
  elif sub == "rowboat":
    length = _u(rng, 3.6, 4.5)
    beam = length * _u(rng, 0.34, 0.38)
    sheer, keel = length * 0.1, length * 0.04
    stations = [(0.0, 0.08, length * 0.05, length * 0.06), (0.1, 0.5, length * 0.03, length * 0.03),
                (0.35, 0.95, 0.0, 0.0), (0.6, 1.0, 0.0, 0.0), (1.0, 0.7, length * 0.02, length * 0.03)]
    parts.append(_hull(length, beam, sheer, keel, stations, shell=0.08, vee=0.8))
    for t, w in ((0.3, 0.9), (0.55, 0.95), (0.82, 0.85)):
      parts.append(P.box((beam * w * 0.92, length * 0.06, length * 0.012),
                         (0, -length / 2 + t * length, sheer - length * 0.025)))
    # oars shipped: lying on the thwarts along the boat, blades towards the stern
    for x in (-1, 1):
      a, b = (x * beam * 0.12, -length * 0.3, sheer - 0.01), (x * beam * 0.3, length * 0.3, sheer - 0.01)
      parts.append(P.rod(length * 0.008, a, b))
      parts.append(P.box((length * 0.035, length * 0.15, length * 0.005),
                         (x * beam * 0.31, length * 0.36, sheer - 0.01)))
  elif sub == "canoe":
    length = _u(rng, 4.8, 5.5)
    beam = length * _u(rng, 0.16, 0.19)
    sheer, keel = length * 0.06, length * 0.03
    rise = length * 0.04
    stations = [(0.0, 0.03, rise, length * 0.05), (0.1, 0.5, rise * 0.4, length * 0.015),
                (0.3, 0.9, 0.05, 0.0), (0.5, 1.0, 0.0, 0.0), (0.7, 0.9, 0.05, 0.0),
                (0.9, 0.5, rise * 0.4, length * 0.015), (1.0, 0.03, rise, length * 0.05)]
    parts.append(_hull(length, beam, sheer, keel, stations, shell=0.07, vee=0.7))
    for y in (-length * 0.3, length * 0.3):  # two seats, symmetric fore and aft
      parts.append(P.box((beam * 0.8, length * 0.05, length * 0.01), (0, y, sheer - length * 0.015)))
    parts.append(P.box((beam * 0.95, length * 0.02, length * 0.01), (0, 0, sheer - length * 0.005)))
    symmetry = "rotational-z-2"
  elif sub == "ship":
    length = _u(rng, 90, 120)
    beam = length * _u(rng, 0.14, 0.17)
    sheer, keel = length * 0.05, length * 0.04
    stations = [(0.0, 0.05, length * 0.015, length * 0.02), (0.08, 0.7, length * 0.008, 0.0),
                (0.2, 1.0, 0.0, 0.0), (0.85, 1.0, 0.0, 0.0), (1.0, 0.9, length * 0.004, length * 0.012)]
    parts.append(_hull(length, beam, sheer, keel, stations, vee=4.0, n=14))
    y_bridge = length / 2 - length * 0.16
    parts.append(P.box_between((-beam * 0.48, y_bridge - length * 0.04, sheer),
                               (beam * 0.48, y_bridge + length * 0.1, sheer + length * 0.11)))
    parts.append(P.box_between((-beam * 0.55, y_bridge - length * 0.035, sheer + length * 0.11),
                               (beam * 0.55, y_bridge + length * 0.02, sheer + length * 0.13)))
    parts.append(P.cylinder(length * 0.025, (0, y_bridge + length * 0.07, sheer + length * 0.1),
                            (0, y_bridge + length * 0.09, sheer + length * 0.19), sections=12))
    # container stacks of varying height between the bow and the bridge
    n_bays = int(rng.integers(5, 8))
    y_start, y_stop = -length / 2 + length * 0.14, y_bridge - length * 0.06
    bay = (y_stop - y_start) / n_bays
    for b in range(n_bays):
      h = length * 0.02 * int(rng.integers(1, 4))
      parts.append(P.box_between((-beam * 0.42, y_start + b * bay + 0.5, sheer),
                                 (beam * 0.42, y_start + (b + 1) * bay - 0.5, sheer + h)))
  else:
    raise ValueError(sub)
  return P.combine(parts), symmetry


# ----------------------------------------------------------------------------------------------------
# bottle: upright along z; a handle or spout, where there is one, faces +y / -y.


def _bottle(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Wine, beer, water, soda (round: 'rotational-z'), a jug with a handle, a flask, a sports bottle."""
  height = _u(rng, 0.9, 1.1)
  parts = []
  symmetry = "rotational-z"
  if sub == "wine":
    r = height * _u(rng, 0.12, 0.135)
    neck = r * 0.36
    if k == 1:  # bordeaux: straight body, sharp shoulder
      prof = [(0, 0), (r, 0), (r, 0.62), (r * 0.92, 0.68), (r * 0.55, 0.72), (neck, 0.76), (neck, 0.95)]
    else:  # burgundy: long sloping shoulder
      prof = [(0, 0), (r * 1.05, 0), (r * 1.05, 0.45), (r * 0.9, 0.58), (r * 0.6, 0.68), (neck, 0.78),
              (neck, 0.95)]
    prof += [(neck * 1.2, 0.95), (neck * 1.2, 1.0), (0, 1.0)]
  elif sub == "beer":  # stubbier body, long conical neck, crown lip
    r = height * _u(rng, 0.16, 0.18)
    neck = r * 0.3
    prof = [(0, 0), (r * 0.95, 0), (r, 0.03), (r, 0.45), (r * 0.8, 0.55), (r * 0.5, 0.64), (neck * 1.15, 0.8),
            (neck, 0.94), (neck * 1.3, 0.95), (neck * 1.3, 1.0), (0, 1.0)]
  elif sub == "water":  # ribbed body, short neck, wide cap
    r = height * _u(rng, 0.15, 0.17)
    prof = [(0, 0), (r * 0.9, 0), (r, 0.03)]
    for z in np.linspace(0.1, 0.5, 5):
      prof += [(r, z), (r * 0.94, z + 0.03), (r, z + 0.06)]
    prof += [(r, 0.64), (r * 0.75, 0.76), (r * 0.35, 0.86), (r * 0.3, 0.9), (r * 0.38, 0.9), (r * 0.38, 1.0),
             (0, 1.0)]
  elif sub == "soda":  # contoured waist
    r = height * _u(rng, 0.14, 0.16)
    prof = [(0, 0), (r * 0.85, 0), (r, 0.06), (r, 0.3), (r * 0.82, 0.42), (r, 0.55), (r * 0.95, 0.66),
            (r * 0.45, 0.82), (r * 0.3, 0.88), (r * 0.36, 0.9), (r * 0.36, 1.0), (0, 1.0)]
  elif sub == "jug":  # wide body with a handle loop on one side (+x): not rotationally symmetric
    r = height * _u(rng, 0.2, 0.23)
    prof = [(0, 0), (r, 0), (r, 0.62), (r * 0.6, 0.78), (r * 0.3, 0.85), (r * 0.3, 0.95), (r * 0.35, 0.95),
            (r * 0.35, 1.0), (0, 1.0)]
    handle = [(r * 0.5, 0, 0.82 * height), (r * 1.25, 0, 0.75 * height), (r * 1.4, 0, 0.5 * height),
              (r * 1.2, 0, 0.3 * height), (r * 0.8, 0, 0.25 * height)]
    parts.append(P.sweep(handle, r * 0.1, normal=(0, 1, 0), sides=8))
    symmetry = None
  elif sub == "flask":  # flat oval body: only a half turn maps it onto itself
    a, b = height * _u(rng, 0.2, 0.26), height * _u(rng, 0.08, 0.12)
    rings = []
    for z, f in ((0.0, 0.9), (0.03, 1.0), (0.62, 1.0), (0.72, 0.7)):
      rings.append(P.ring_xy(P.superellipse(a * f, b * f, 24, 2.2), z * height))
    parts.append(P.loft(rings))
    prof = [(0, 0.7), (b * 0.45, 0.7), (b * 0.45, 1.0), (0, 1.0)]
    symmetry = "rotational-z-2"
  elif sub == "sports":  # cylinder with a flip cap whose spout leans to the front (-y) and a loop
    r = height * _u(rng, 0.15, 0.17)
    prof = [(0, 0), (r, 0), (r, 0.78), (r * 0.9, 0.82), (r * 0.9, 0.88), (0, 0.88)]
    parts.append(P.cylinder(r * 0.3, (0, -r * 0.35, 0.86 * height), (0, -r * 0.6, 1.0 * height),
                            sections=10))
    # a carry ring sticking out behind the cap
    parts.append(P.torus(r * 0.35, r * 0.08, (0, r * 1.15, 0.85 * height), (0, 0, 1), minor_sections=6))
    symmetry = None
  else:
    raise ValueError(sub)
  parts.append(P.lathe([(rr, z * height) for rr, z in prof], sections=24))
  return P.combine(parts), symmetry


# ----------------------------------------------------------------------------------------------------
# chair and sofa: seat front at -y, backrest at +y.


def _four_legs(x: float, y: float, top: float, size: float, round_legs: bool = False,
               splay: float = 0.0) -> trimesh.Trimesh:
  """Four legs under the corners (+-x, +-y) from z = `top` down to the floor, optionally splayed out."""
  legs = []
  for sx in (-1, 1):
    for sy in (-1, 1):
      a = (sx * x, sy * y, top)
      b = (sx * (x + splay), sy * (y + splay), 0.0)
      if round_legs:
        legs.append(P.cylinder(size / 2, a, b, sections=10))
      else:
        legs.append(P.sweep([a, b], size / 2, normal=(1, 0, 0), sides=4, power=8))
  return P.combine(legs)


def _chair(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Dining (slatted/ladder back), office (5-star base), armchairs, a bar stool, a deckchair, a
  folding chair and a windsor chair."""
  sw = _u(rng, 0.42, 0.5)  # seat width (x)
  sd = _u(rng, 0.4, 0.48)  # seat depth (y)
  sh = _u(rng, 0.43, 0.47)  # seat height
  back_top = sh + _u(rng, 0.42, 0.55)
  t = 0.035  # slab thickness
  parts = []
  if sub == "dining":
    leg = 0.04
    parts.append(P.box((sw, sd, t), (0, 0, sh - t / 2)))
    parts.append(_four_legs(sw / 2 - leg, sd / 2 - leg, sh - t, leg))
    # rear legs continue up as the back posts, with a top rail
    for x in (-1, 1):
      parts.append(P.box((leg, leg, back_top - sh), (x * (sw / 2 - leg), sd / 2 - leg, (sh + back_top) / 2)))
    parts.append(P.box((sw - leg, leg * 0.8, 0.08), (0, sd / 2 - leg, back_top - 0.05)))
    parts.append(P.pair_x(P.box((leg * 0.6, sd - 2 * leg, 0.05), (sw / 2 - leg, 0, 0.15))))  # stretchers
    if k == 1:  # vertical slats
      n = int(rng.integers(3, 6))
      for x in np.linspace(-sw / 2 + 2.5 * leg, sw / 2 - 2.5 * leg, n):
        parts.append(P.box((0.025, 0.015, back_top - sh - 0.1), (x, sd / 2 - leg, (sh + back_top - 0.1) / 2)))
    else:  # ladder back: horizontal slats
      for z in np.linspace(sh + 0.12, back_top - 0.16, 3):
        parts.append(P.box((sw - leg, 0.018, 0.045), (0, sd / 2 - leg, z)))
  elif sub == "office":
    # five-star base on casters, gas column, padded seat and back, armrests on the second one
    base_r = _u(rng, 0.26, 0.29)
    for i in range(5):
      a = 2 * math.pi * i / 5 + math.pi / 2
      end = np.array([base_r * math.cos(a), base_r * math.sin(a), 0.07])
      parts.append(P.capsule(0.022, (0, 0, 0.09), end))
      parts.append(P.ellipsoid((0.03, 0.03, 0.03), end - [0, 0, 0.035], subdivisions=1))
    parts.append(P.cylinder(0.04, (0, 0, 0.08), (0, 0, sh - 0.06), sections=12))
    seat = P.loft([P.ring_xy(P.superellipse(sw / 2 + 0.03, sd / 2 + 0.03, 20, 4), z)
                   for z in (sh - 0.07, sh)])
    parts.append(seat)
    tilt = 0.2
    back_h = back_top - sh + (0.1 if k == 2 else 0.0)
    back = P.box((sw * 0.95, 0.06, back_h * 0.8), (0, 0, 0))
    back.apply_transform(np.block([[P.rot_x(-tilt), np.array([[0], [sd / 2 + 0.04],
                                                                [sh + back_h * 0.55]])],
                                   [np.zeros((1, 3)), np.ones((1, 1))]]))
    parts.append(back)
    parts.append(P.box((0.05, 0.2, 0.04), (0, sd / 2 - 0.02, sh - 0.06)))
    parts.append(P.box((0.05, 0.04, 0.2), (0, sd / 2 + 0.04, sh + 0.05)))
    if k == 2:
      for x in (-1, 1):
        parts.append(P.box((0.03, 0.03, 0.2), (x * (sw / 2 + 0.02), 0.02, sh + 0.1)))
        parts.append(P.box((0.07, 0.26, 0.03), (x * (sw / 2 + 0.02), 0.0, sh + 0.21)))
  elif sub == "armchair":  # upholstered: thick seat, arms and back
    sw, sd = _u(rng, 0.75, 0.85), _u(rng, 0.75, 0.85)
    arm_w, back_d = 0.14, 0.18
    sh = 0.42
    back_top = _u(rng, 0.85, 0.95) if k == 1 else _u(rng, 1.05, 1.15)
    arm_top = _u(rng, 0.6, 0.66)
    parts.append(P.box_between((-sw / 2, -sd / 2, 0.1), (sw / 2, sd / 2, sh - 0.12)))
    parts.append(P.box_between((-sw / 2 + arm_w, -sd / 2 + 0.02, sh - 0.12),
                               (sw / 2 - arm_w, sd / 2 - back_d, sh)))
    parts.append(P.box_between((-sw / 2, sd / 2 - back_d, 0.1), (sw / 2, sd / 2, back_top)))
    parts.append(P.pair_x(P.box_between((sw / 2 - arm_w, -sd / 2, 0.1), (sw / 2, sd / 2, arm_top))))
    if k == 2:  # wingback: wings at the top of the back
      parts.append(P.pair_x(P.box_between((sw / 2 - arm_w * 0.7, sd / 2 - back_d - 0.2, arm_top),
                                          (sw / 2, sd / 2 - back_d, back_top - 0.08))))
    else:  # rolled arms
      parts.append(P.pair_x(P.cylinder(arm_w * 0.6, (sw / 2 - arm_w / 2, -sd / 2, arm_top),
                                       (sw / 2 - arm_w / 2, sd / 2 - 0.02, arm_top), sections=12)))
    parts.append(_four_legs(sw / 2 - 0.05, sd / 2 - 0.05, 0.1, 0.05, round_legs=True))
  elif sub == "bar_stool":  # tall stool with a low back and a foot ring
    sh = _u(rng, 0.68, 0.76)
    r = _u(rng, 0.19, 0.22)
    parts.append(P.cylinder(r, (0, 0, sh - 0.05), (0, 0, sh), sections=20))
    for a in np.arange(4) * math.pi / 2 + math.pi / 4:
      parts.append(P.rod(0.015, (r * 0.7 * math.cos(a), r * 0.7 * math.sin(a), sh - 0.05),
                         ((r + 0.06) * math.cos(a), (r + 0.06) * math.sin(a), 0.0)))
    parts.append(P.torus(r * 0.95, 0.012, (0, 0, sh * 0.35), (0, 0, 1), minor_sections=6))
    back = P.arc((0, 0, sh + 0.25), r * 0.95, math.radians(20), math.radians(160), "xy", 10)
    parts.append(P.sweep(back, 0.04, normal=(0, 0, 1), sides=8, power=6, aspect=0.4))
    for a in (math.radians(35), math.radians(145)):
      parts.append(P.rod(0.012, (r * 0.9 * math.cos(a), r * 0.9 * math.sin(a), sh),
                         (r * 0.95 * math.cos(a), r * 0.95 * math.sin(a), sh + 0.25)))
  elif sub == "deckchair":  # a sling between two slanted side frames
    sw = _u(rng, 0.55, 0.62)
    depth = _u(rng, 0.75, 0.85)
    parts_frame = []
    y_f, y_b = -depth / 2, depth / 2
    for x in (-1, 1):
      xx = x * sw / 2
      parts_frame.append(P.rod(0.018, (xx, y_f, 0.0), (xx, y_b * 0.9, 0.85)))  # front leg up to back top
      parts_frame.append(P.rod(0.018, (xx, y_b, 0.0), (xx, y_f * 0.1, 0.45)))  # rear leg
      parts_frame.append(P.rod(0.018, (xx, y_f - 0.05, 0.4), (xx, y_b * 0.5, 0.4)))  # arm rest
    parts += parts_frame
    sling = [(0, y_f + 0.05, 0.38), (0, y_f + 0.25, 0.22), (0, 0.0, 0.2), (0, y_b * 0.5, 0.45),
             (0, y_b * 0.85, 0.8)]
    parts.append(P.sweep(sling, 0.012, normal=(1, 0, 0), sides=8, power=8, aspect=sw / 2 / 0.012 * 0.95))
  elif sub == "folding":  # tubular frame, X side view, thin seat and back plates
    leg = 0.022
    for x in (-1, 1):
      xx = x * sw / 2
      parts.append(P.rod(leg / 2, (xx, -sd / 2 - 0.05, 0.0), (xx, sd / 2, back_top)))  # front leg + back post
      parts.append(P.rod(leg / 2, (xx * 0.92, sd / 2 + 0.05, 0.0), (xx * 0.92, -sd / 2 + 0.05, sh)))
    parts.append(P.box((sw, sd, 0.02), (0, -0.02, sh)))
    parts.append(P.box((sw, 0.02, 0.18), (0, sd / 2 - 0.02, back_top - 0.14), P.rot_x(-0.2)))
    parts.append(P.rod(leg / 2, (-sw / 2, -sd / 2 + 0.02, 0.12), (sw / 2, -sd / 2 + 0.02, 0.12)))
  elif sub == "windsor":  # round seat, splayed legs, spindles up to a bow
    r = _u(rng, 0.22, 0.25)
    parts.append(P.lathe([(0, sh - 0.04), (r, sh - 0.04), (r, sh), (0, sh)], sections=20))
    parts.append(_four_legs(r * 0.6, r * 0.6, sh - 0.04, 0.035, round_legs=True, splay=0.06))
    bow_c = np.array([0.0, r * 0.15, back_top])
    bow = P.arc(bow_c, r * 0.95, math.radians(15), math.radians(165), "xy", 12)
    parts.append(P.sweep(bow, 0.018, normal=(0, 0, 1), sides=6))
    for a in np.linspace(math.radians(25), math.radians(155), 7):
      top = bow_c + r * 0.95 * np.array([math.cos(a), math.sin(a), 0.0])
      parts.append(P.rod(0.008, (top[0] * 0.9, top[1] * 0.8, sh), top))
    parts.append(P.pair_x(P.rod(0.012, (r * 0.85, 0.0, sh), (r * 0.95, -0.02, sh + 0.2))))  # arm posts
    parts.append(P.pair_x(P.rod(0.012, (r * 0.95, -0.05, sh + 0.2), (r * 0.95, r * 0.5, sh + 0.22))))
  else:
    raise ValueError(sub)
  return P.combine(parts), None


def _sofa(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Three-seaters, a loveseat, a sectional with a chaise, a daybed and a one-seat sofa."""
  seats = {"three_seater": 3, "loveseat": 2, "sectional": 3, "daybed": 3, "armchair": 1}[sub]
  seat_w = _u(rng, 0.58, 0.68)
  arm_w = {"daybed": 0.0}.get(sub, _u(rng, 0.14, 0.22))
  depth = _u(rng, 0.85, 0.95)
  back_top = {"daybed": 0.62}.get(sub, _u(rng, 0.78, 0.9))
  arm_top = _u(rng, 0.58, 0.66)
  base_top, cushion = 0.3, 0.14
  back_d = 0.28 if sub == "daybed" else 0.2  # the daybed's low back is a thick bolster
  width = seats * seat_w + 2 * arm_w
  x0, x1 = -width / 2, width / 2
  y0, y1 = -depth / 2, depth / 2
  leg_h = 0.08 if k == 1 or sub != "three_seater" else 0.16
  parts = [P.box_between((x0, y0, leg_h), (x1, y1, base_top))]
  parts.append(P.box_between((x0, y1 - back_d, leg_h), (x1, y1, back_top)))
  for i in range(seats):  # seat cushions and back cushions, one per place
    xa = x0 + arm_w + i * seat_w + 0.01
    xb = xa + seat_w - 0.02
    parts.append(P.box_between((xa, y0 + 0.02, base_top), (xb, y1 - back_d, base_top + cushion)))
    parts.append(P.box((xb - xa, 0.14, back_top - base_top - cushion - 0.05),
                       ((xa + xb) / 2, y1 - back_d - 0.05, (base_top + cushion + back_top) / 2 + 0.02),
                       P.rot_x(-0.15)))
  if arm_w:
    arm = P.box_between((x1 - arm_w, y0, leg_h), (x1, y1, arm_top))
    if sub == "three_seater" and k == 2:  # rolled arms
      arm = P.combine([P.box_between((x1 - arm_w, y0, leg_h), (x1, y1, arm_top - arm_w / 2)),
                       P.cylinder(arm_w * 0.6, (x1 - arm_w / 2, y0, arm_top - arm_w / 2),
                                  (x1 - arm_w / 2, y1, arm_top - arm_w / 2), sections=14)])
    parts.append(P.pair_x(arm))
  if sub == "sectional":  # a chaise longue on the +x end: no longer left/right symmetric
    cx0 = x1 - arm_w - seat_w
    chaise_len = _u(rng, 0.65, 0.8)
    parts.append(P.box_between((cx0, y0 - chaise_len, leg_h), (x1, y0, base_top)))
    parts.append(P.box_between((cx0 + 0.01, y0 - chaise_len + 0.02, base_top),
                               (x1 - arm_w - 0.01, y0, base_top + cushion)))
    parts.append(P.box_between((x1 - arm_w, y0 - chaise_len, leg_h), (x1, y0, arm_top)))
  if sub == "daybed":  # bolster cushions instead of arms
    parts.append(P.pair_x(P.cylinder(0.1, (x1 - 0.12, y0 + 0.05, base_top + 0.1),
                                     (x1 - 0.12, y1 - back_d, base_top + 0.1), sections=14)))
  # legs (and two more under the front of the chaise)
  corners = [(x, y) for x in (x0 + 0.06, x1 - 0.06) for y in (y0 + 0.06, y1 - 0.06)]
  if sub == "sectional":
    corners += [(x, y0 - chaise_len + 0.06) for x in (x1 - arm_w - seat_w + 0.06, x1 - 0.06)]
  for x, y in corners:
    parts.append(P.cone(0.035, (x, y, leg_h), (x, y, 0.0), sections=8)
                 if k == 1 else P.cylinder(0.03, (x, y, 0.0), (x, y, leg_h), sections=8))
  return P.combine(parts), None


# ----------------------------------------------------------------------------------------------------
# diningtable: long side along x.


def _diningtable(rng: np.random.Generator, sub: str, k: int) -> Built:
  """Rectangular, with drawers, round pedestal, oval, trestle and square tables."""
  del k
  height = _u(rng, 0.72, 0.78)
  top_t = _u(rng, 0.03, 0.05)
  parts = []
  symmetry = "rotational-z-2"
  if sub in ("rectangular", "drawer", "square"):
    length = _u(rng, 0.85, 0.95) if sub == "square" else _u(rng, 1.5, 2.0)
    width = length if sub == "square" else _u(rng, 0.85, 1.0)
    if sub == "drawer":
      length, width = _u(rng, 1.2, 1.4), _u(rng, 0.65, 0.75)
    leg = _u(rng, 0.05, 0.08)
    inset = _u(rng, 0.03, 0.08)
    parts.append(P.box((length, width, top_t), (0, 0, height - top_t / 2)))
    lx, ly = length / 2 - inset - leg / 2, width / 2 - inset - leg / 2
    parts.append(_four_legs(lx, ly, height - top_t, leg, round_legs=sub == "square"))
    apron = 0.1
    parts.append(P.pair_x(P.box((0.02, 2 * ly, apron), (lx, 0, height - top_t - apron / 2))))
    for y in (-ly, ly):
      parts.append(P.box((2 * lx, 0.02, apron), (0, y, height - top_t - apron / 2)))
    if sub == "drawer":
      # A farmhouse table with a drawer in each long side: two drawer fronts, each with a knob. One
      # drawer on one side only would be invisible at 32^3 voxels (the turned grid would match the
      # original to IoU 0.99), so the table is made, and labelled, truly 2-fold symmetric.
      for sy in (-1, 1):
        parts.append(P.box((length * 0.35, 0.04, apron * 0.9),
                           (0, sy * (ly + 0.025), height - top_t - apron / 2)))
        parts.append(P.ellipsoid((0.03, 0.03, 0.03), (0, sy * (ly + 0.07), height - top_t - apron / 2),
                                 subdivisions=1))
    if sub == "square":
      symmetry = "rotational-z-4"
  elif sub == "round":  # pedestal table
    r = _u(rng, 0.5, 0.6)
    parts.append(P.lathe([(0, 0), (r * 0.55, 0), (r * 0.5, 0.05), (0.07, 0.12), (0.06, height - top_t - 0.05),
                          (0.15, height - top_t), (r, height - top_t), (r, height), (0, height)],
                         sections=32))
    symmetry = "rotational-z"
  elif sub == "oval":
    a, b = _u(rng, 0.85, 1.05), _u(rng, 0.5, 0.58)
    parts.append(P.loft([P.ring_xy(P.superellipse(a, b, 32), z) for z in (height - top_t, height)]))
    lx, ly = a * 0.6, b * 0.55
    for sx in (-1, 1):
      for sy in (-1, 1):  # turned legs
        parts.append(P.lathe([(0, 0), (0.03, 0), (0.035, 0.1), (0.025, 0.3), (0.045, 0.45), (0.03, 0.6),
                              (0.035, height - top_t), (0, height - top_t)], sections=10,
                             center=(sx * lx, sy * ly, 0)))
  elif sub == "trestle":
    length, width = _u(rng, 1.8, 2.2), _u(rng, 0.8, 0.95)
    parts.append(P.box((length, width, top_t), (0, 0, height - top_t / 2)))
    for x in (-1, 1):
      xx = x * (length / 2 - 0.25)
      parts.append(P.box((0.1, width * 0.85, 0.08), (xx, 0, 0.04)))  # foot
      parts.append(P.box((0.09, width * 0.7, 0.07), (xx, 0, height - top_t - 0.035)))  # cleat
      parts.append(P.box((0.08, 0.12, height - top_t - 0.1), (xx, 0, (height - top_t) / 2)))  # upright
    parts.append(P.box((length - 0.5, 0.06, 0.1), (0, 0, 0.3)))  # stretcher
  else:
    raise ValueError(sub)
  return P.combine(parts), symmetry


# ----------------------------------------------------------------------------------------------------
# tvmonitor: screen along x facing -y.


def _tvmonitor(rng: np.random.Generator, sub: str, k: int) -> Built:
  """A CRT, a flat TV on a foot, a monitor on a column and a slim wall panel on small feet."""
  del k
  parts = []
  if sub == "crt":
    w = _u(rng, 0.5, 0.65)
    h = w * _u(rng, 0.78, 0.85)
    depth = w * _u(rng, 0.75, 0.9)
    z0 = 0.04
    parts.append(P.box_between((-w / 2, -depth / 2, z0), (w / 2, -depth / 2 + 0.1 * w, z0 + h)))
    # The tube housing tapers towards the back from the top and the sides; its bottom stays flat.
    rings = [P.ring_xz(P.superellipse(w / 2 * f, h / 2 * f, 16, 6), y, z0 + h / 2 * f)
             for f, y in ((0.98, -depth / 2 + 0.1 * w), (0.85, -depth / 2 + 0.45 * depth),
                          (0.45, depth / 2))]
    parts.append(P.loft(rings))
    parts.append(P.box_between((-w * 0.42, -depth / 2 - 0.01, z0 + h * 0.1),
                               (w * 0.42, -depth / 2 + 0.01, z0 + h * 0.9)))  # screen glass, proud
    parts.append(P.box_between((-w * 0.35, -depth / 2 + 0.05, 0.0), (w * 0.35, depth * 0.2, z0)))  # foot
  elif sub in ("flat_stand", "monitor"):
    w = _u(rng, 0.95, 1.2) if sub == "flat_stand" else _u(rng, 0.55, 0.65)
    h = w * (9 / 16 if sub == "flat_stand" else 10 / 16) + 0.04
    t = 0.05 if sub == "flat_stand" else 0.03
    neck_h = _u(rng, 0.08, 0.12) if sub == "flat_stand" else _u(rng, 0.12, 0.16)
    z0 = neck_h + 0.02
    parts.append(P.box_between((-w / 2, -t / 2, z0), (w / 2, t / 2, z0 + h)))
    parts.append(P.box_between((-w * 0.47, -t / 2 - 0.006, z0 + 0.02),
                               (w * 0.47, -t / 2, z0 + h - 0.02)))  # screen, proud of the bezel
    parts.append(P.box_between((-w * 0.3, t / 2, z0 + h * 0.2), (w * 0.3, t / 2 + 0.04, z0 + h * 0.8)))
    if sub == "flat_stand":
      parts.append(P.box((0.08, 0.04, neck_h + 0.15), (0, t / 2 + 0.03, neck_h / 2 + 0.08)))
      parts.append(P.box((w * 0.45, w * 0.22, 0.02), (0, 0.04, 0.01)))
    else:  # a column rising behind the screen from a round foot
      parts.append(P.box((0.06, 0.03, z0 + h * 0.5), (0, t / 2 + 0.055, (z0 + h * 0.5) / 2 + 0.01)))
      parts.append(P.lathe([(0, 0), (0.13, 0), (0.12, 0.02), (0, 0.02)], sections=24, center=(0, 0.06, 0)))
  elif sub == "wall":
    # A thin panel on two small feet. Its electronics bulge out of the back of the lower part, tapering
    # up to the thin top edge, and a speaker bar runs under the screen: upside down it looks different.
    w = _u(rng, 1.1, 1.4)
    h = w * 9 / 16 + 0.04
    z0 = 0.1
    parts.append(P.box_between((-w / 2, -0.02, z0), (w / 2, 0.02, z0 + h)))
    parts.append(P.box_between((-w * 0.47, -0.026, z0 + 0.02), (w * 0.47, -0.02, z0 + h - 0.02)))
    parts.append(P.extrude([(0.0, z0 + h * 0.05), (0.1, z0 + h * 0.05), (0.1, z0 + h * 0.35),
                            (0.0, z0 + h * 0.8)], w * 0.8, "yz"))  # electronics, tapering upwards
    parts.append(P.box_between((-w / 2, -0.06, z0 - 0.07), (w / 2, 0.04, z0)))  # speaker bar
    for x in (-1, 1):
      parts.append(P.box_between((x * w * 0.38 - 0.03, -0.07, 0.0), (x * w * 0.38 + 0.03, 0.12, z0 - 0.07)))
  else:
    raise ValueError(sub)
  return P.combine(parts), None


# ----------------------------------------------------------------------------------------------------
# The catalogue.

_BUILDERS: dict[str, Callable[[np.random.Generator, str, int], Built]] = {
    "aeroplane": _aeroplane, "bicycle": _bicycle, "boat": _boat, "bottle": _bottle, "bus": _bus,
    "car": _car, "chair": _chair, "diningtable": _diningtable, "motorbike": _motorbike, "sofa": _sofa,
    "train": _train, "tvmonitor": _tvmonitor,
}

# One built model, with read-only arrays so the per-seed cache cannot be corrupted by a caller.
_Frozen = tuple[str, int, str, str, np.ndarray, np.ndarray, model_lib.Normalization, str | None]


@functools.lru_cache(maxsize=4)
def _build_zoo(seed: int) -> tuple[_Frozen, ...]:
  out = []
  for c_index, category in enumerate(CATEGORIES):
    subtypes = SUBTYPES[category]
    for i, sub in enumerate(subtypes):
      k = subtypes[:i + 1].count(sub)
      # One generator per model: a model depends only on (seed, category, cad_index), so editing one
      # sub-type never changes the others.
      rng = np.random.default_rng([seed, c_index, i + 1])
      mesh, symmetry = _BUILDERS[category](rng, sub, k)
      normalized, norm = model_lib.normalize_mesh(mesh)
      vertices = np.ascontiguousarray(normalized.vertices, np.float64)
      faces = np.ascontiguousarray(normalized.faces, np.int64)
      if not np.isfinite(vertices).all():
        raise RuntimeError(f"zoo model {category}/{sub}_{k} has non-finite vertices")
      vertices.flags.writeable = False
      faces.flags.writeable = False
      out.append((category, i + 1, f"{category}/{sub}_{k}", f"zoo:{category}/{sub}", vertices, faces,
                  norm, symmetry))
  return tuple(out)


def procedural_zoo(seed: int = 0) -> list[model_lib.CadModel]:
  """The built-in procedural CAD database: 79 models of the 12 Pascal3D+ categories.

  Args:
    seed: a non-negative integer; the same seed gives identical vertices (built once per process and
      cached, see `_build_zoo`), another seed gives other continuous parameters with the same sub-types.

  Returns:
    A fresh list of `CadModel`s (fresh meshes, safe to modify), ordered by category (as in
    `CATEGORIES`) and then cad_index (1..N within each category, following `SUBTYPES`). Each mesh is
    normalised (`model.normalize_mesh`: bbox centre at the origin, bounding radius 0.5) in the Pascal3D+
    frame documented in this module, and has fewer than 5,000 faces.
  """
  if int(seed) != seed or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  models = []
  for category, index, name, source, vertices, faces, norm, symmetry in _build_zoo(int(seed)):
    mesh = trimesh.Trimesh(vertices=vertices.copy(), faces=faces.copy(), process=False)
    models.append(model_lib.CadModel(category=category, cad_index=index, mesh=mesh, normalization=norm,
                                     source=source, name=name, symmetry=symmetry))
  return models


def symmetry_rotations(symmetry: str | None, n: int = 36) -> np.ndarray:
  """The rotations S (object frame) that map a model with `symmetry` onto itself.

  An evaluation that forgives symmetric ambiguity scores min_S d(R_pred, R_gt S).

  Args:
    symmetry: a key of `SYMMETRIES`.
    n: number of samples of the continuous group for 'rotational-z'.

  Returns:
    (K, 3, 3) rotation matrices, the identity first. Raises ValueError for an unknown name.
  """
  steps = {None: 1, "rotational-z": n, "rotational-z-2": 2, "rotational-z-4": 4}
  if symmetry not in steps:
    raise ValueError(f"unknown symmetry {symmetry!r}; expected one of {sorted(map(str, SYMMETRIES))}")
  k = steps[symmetry]
  return np.stack([P.rot_z(2 * math.pi * i / k) for i in range(k)])


# ----------------------------------------------------------------------------------------------------
# Contact sheet.

# Albedo per category, so the sheet reads at a glance.
_SHEET_COLORS = {c: tuple(0.35 + 0.5 * np.array(
    [0.5 + 0.5 * math.cos(2 * math.pi * i / 12 + p) for p in (0.0, 2.1, 4.2)]))
                 for i, c in enumerate(CATEGORIES)}


def view_rotation(azimuth: float, elevation: float, theta: float = 0.0) -> np.ndarray:
  """The object -> camera rotation (X_c = R X_o + t, CV camera) of a Pascal3D+ viewpoint (radians).

  Pascal3D+'s projection puts the camera at (cos(el) sin(az), -cos(el) cos(az), sin(el)) * d with +z up,
  so azimuth 0 looks at the front (-y) and azimuth 90 deg at the +x side. See
  `disent_jax.geometry.viewpoint_to_camera_rotation` for how this relates to the annotation matrix.
  """
  with jax.enable_x64(True):  # float64: the sheet's camera should not carry float32 rounding
    return np.asarray(geometry.viewpoint_to_camera_rotation(azimuth, elevation, theta), np.float64)


def _render_tile(mesh: trimesh.Trimesh, R: np.ndarray, t: np.ndarray, size: int, focal: float,
                 color: Sequence[float]) -> np.ndarray:
  """One (size, size, 3) float tile on white, with the project renderer, or a minimal Embree ray cast
  of our own where `disent_jax.render` is unavailable."""
  try:
    from disent_jax.render.camera import Camera  # pylint: disable=import-outside-toplevel
    from disent_jax.render.raycast import render_raycast  # pylint: disable=import-outside-toplevel
  except ImportError:
    render_raycast = None
  if render_raycast is not None:
    camera = Camera(fx=focal, fy=focal, cx=size / 2, cy=size / 2, width=size, height=size)
    res = render_raycast(mesh, R, t, camera, color=color, ambient=0.35)
    return np.where(res.mask[..., None], res.rgb, 1.0)
  from trimesh.ray.ray_pyembree import RayMeshIntersector  # pylint: disable=import-outside-toplevel
  j, i = np.mgrid[0:size, 0:size]
  d_cam = np.stack([(i + 0.5 - size / 2) / focal, (j + 0.5 - size / 2) / focal, np.ones((size, size))],
                   -1).reshape(-1, 3)
  d_cam /= np.linalg.norm(d_cam, axis=1, keepdims=True)
  tri = RayMeshIntersector(mesh).intersects_first(np.repeat((-R.T @ t)[None], len(d_cam), 0), d_cam @ R)
  img = np.ones((size * size, 3))
  hit = tri >= 0
  n = mesh.face_normals[tri[hit]] @ R.T
  n *= np.where((n * d_cam[hit]).sum(1) > 0, -1.0, 1.0)[:, None]
  light = np.array([-0.3, -0.5, -1.0]) / np.linalg.norm([-0.3, -0.5, -1.0])
  img[hit] = np.asarray(color) * (0.35 + 0.65 * np.clip(n @ light, 0, 1))[:, None]
  return img.reshape(size, size, 3)


def contact_sheet(models: Sequence[model_lib.CadModel], path: str, size: int = 160, columns: int = 10,
                  azimuth_deg: float = 35.0, elevation_deg: float = 20.0, distance: float = 2.2) -> None:
  """Writes a PNG grid with one captioned rendering per model, all from the same viewpoint.

  The default view is a 3/4 front view from slightly above (Pascal3D+ azimuth 35 deg, elevation 20 deg, see
  `view_rotation`), so the front (-y) faces the viewer, turned to the right.

  Args:
    models: the models (normalised meshes) to show, in order.
    path: output PNG path.
    size: tile size in pixels.
    columns: tiles per row.
    azimuth_deg: Pascal3D+ azimuth of the view.
    elevation_deg: Pascal3D+ elevation of the view.
    distance: camera distance from the object origin, in normalised units.
  """
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  caption = 14
  rows = max(1, math.ceil(len(models) / columns))
  sheet = Image.new("RGB", (columns * size, rows * (size + caption)), "white")
  draw = ImageDraw.Draw(sheet)
  R = view_rotation(math.radians(azimuth_deg), math.radians(elevation_deg))
  t = np.array([0.0, 0.0, distance])
  for n, m in enumerate(models):
    tile = _render_tile(m.mesh, R, t, size, 1.25 * size, _SHEET_COLORS.get(m.category, (0.7, 0.7, 0.7)))
    r, c = divmod(n, columns)
    x, y = c * size, r * (size + caption)
    sheet.paste(Image.fromarray((np.clip(tile, 0, 1) * 255).astype(np.uint8)), (x, y + caption))
    label = f"{m.cad_index:02d} {m.name or m.key}"
    draw.text((x + 2, y + 1), label[: max(8, size // 6)], fill="black")
  sheet.save(path)
