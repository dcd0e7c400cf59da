"""What the scenes are made of: the concepts, the design versions, the palettes and the texture amplitudes.

Everything a version changes lives in `SceneDesign` (one per version in `DESIGNS`); image i of
seed s never changes within a version, so a new look is a new version, never an edit of an old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..utils import GantoolsError

CONCEPTS: list[str] = ["sky", "cloud", "sun", "mountain", "grass", "water", "road", "tree", "trunk",
                       "wall", "roof", "door", "window"]
SKY, CLOUD, SUN, MOUNTAIN, GRASS, WATER, ROAD, TREE, TRUNK, WALL, ROOF, DOOR, WINDOW = range(len(CONCEPTS))
PALETTE_NAMES = ("day", "dusk", "overcast")
MIN_SIZE, MAX_SIZE = 8, 1024
VERSIONS = (1, 2)
VERSION = VERSIONS[-1]  # the current design; image i of seed s never changes within a version


@dataclass(frozen=True)
class SceneDesign:
    """What differs between versions of the scenes' design (sizes are fractions of the image side).

    Version 1 drew objects in true perspective, so most doors, windows, trunks and suns came out a
    few pixels across at 64 px: too small for a 64 px generator to learn (0.36-0.49% of pixels each).
    Version 2 sizes every concept for 64 px: houses and trees stand nearer and never shrink below a
    drawable size, doors, windows and trunks have minimum sizes, the sun is larger and clear of the
    horizon and clouds, and the texture noise is halved, so that D cannot win on texture alone.
    """

    version: int
    sun_p: tuple[float, float, float]  # probability of a sun per palette (day, dusk, overcast)
    sun_radius: tuple[float, float]
    sun_clear: bool  # the whole sun above the horizon, and no cloud in front of it
    house_counts: tuple[float, float, float]  # cumulative P(0 houses), P(<= 1), P(<= 2); else 3
    house_depth_min: float  # nearest depth fraction range starts here (0 = horizon, 1 = bottom edge)
    house_width: tuple[float, float]
    house_min_width: float  # 0: none
    house_inside: bool  # the whole house inside the image
    door_min: tuple[float, float]  # (width, height) at least, as fractions of the side
    door_size: tuple[float, float, float, float]  # width range (of W), height range (of H)
    window_min: float
    four_slots_from: float  # houses at least this wide get four door/window slots, narrower ones three
    window_size: tuple[float, float]
    tree_min_height: float
    tree_depth_min: float
    trunk_min_width: float
    trunk_width: tuple[float, float]  # of the tree's height
    crown_height: tuple[float, float]  # deciduous crown's half-height ry, of the tree's height
    conifer_trunk: tuple[float, float]  # visible trunk below a conifer, of its height
    texture: float  # scale of the noise amplitudes in TEXTURE_AMPLITUDES


DESIGNS: dict[int, SceneDesign] = {
    1: SceneDesign(1, sun_p=(0.55, 0.85, 0.0), sun_radius=(0.045, 0.075), sun_clear=False,
                   house_counts=(0.22, 0.66, 0.93), house_depth_min=0.12, house_width=(0.32, 0.52),
                   house_min_width=0.0, house_inside=False, door_min=(0.0, 0.0), door_size=(0.14, 0.2, 0.5, 0.68),
                   window_min=0.0, four_slots_from=0.3, window_size=(0.12, 0.17), tree_min_height=0.0, tree_depth_min=0.04,
                   trunk_min_width=0.0, trunk_width=(0.07, 0.1), crown_height=(0.28, 0.36),
                   conifer_trunk=(0.15, 0.22), texture=1.0),
    2: SceneDesign(2, sun_p=(0.65, 0.9, 0.0), sun_radius=(0.085, 0.115), sun_clear=True,
                   house_counts=(0.1, 0.5, 0.88), house_depth_min=0.3, house_width=(0.42, 0.62),
                   house_min_width=0.3, house_inside=True, door_min=(4 / 64, 6 / 64), door_size=(0.2, 0.26, 0.58, 0.72),
                   window_min=4 / 64, four_slots_from=0.45, window_size=(0.17, 0.22), tree_min_height=0.28,
                   tree_depth_min=0.15, trunk_min_width=3 / 64, trunk_width=(0.12, 0.16), crown_height=(0.22, 0.27),
                   conifer_trunk=(0.24, 0.32), texture=0.5),
}


def design(version: int = VERSION) -> SceneDesign:
    """The design of a version (1 or 2)."""
    if version not in DESIGNS:
        raise GantoolsError(f"scenes have no version {version}: use {', '.join(map(str, VERSIONS))}")
    return DESIGNS[version]


# Colours per palette (RGB 0-255 before jitter). `light` tints everything lit by the sun (ground
# objects); skies, clouds, the sun and lit windows are not tinted.
PALETTES: dict[str, dict[str, Any]] = {
    "day": dict(
        sky_top=(68, 128, 210), sky_hor=(172, 206, 236), cloud=(246, 246, 250), cloud_shade=-42,
        sun=(255, 248, 185), mount_far=(118, 136, 172), mount_near=(86, 112, 94),
        grass_far=(150, 186, 96), grass_near=(78, 150, 52), water=(42, 92, 165), road=(100, 100, 106),
        dirt=(162, 132, 94), mark=(236, 236, 222), foliage=(44, 110, 40), conifer=(28, 84, 50),
        trunk=(108, 72, 44), window=(92, 132, 176), window_lit=False, light=(1.0, 1.0, 1.0)),
    "dusk": dict(
        sky_top=(52, 44, 104), sky_hor=(246, 150, 84), cloud=(204, 118, 150), cloud_shade=-45,
        sun=(255, 236, 150), mount_far=(124, 82, 124), mount_near=(72, 52, 84),
        grass_far=(124, 118, 74), grass_near=(74, 102, 46), water=(72, 58, 112), road=(82, 76, 84),
        dirt=(128, 100, 80), mark=(222, 210, 190), foliage=(24, 60, 30), conifer=(18, 50, 36),
        trunk=(74, 48, 34), window=(250, 196, 96), window_lit=True, light=(0.86, 0.74, 0.74)),
    "overcast": dict(
        sky_top=(148, 152, 160), sky_hor=(198, 198, 200), cloud=(100, 102, 112), cloud_shade=-20,
        sun=(255, 250, 220), mount_far=(138, 146, 156), mount_near=(88, 100, 94),
        grass_far=(136, 150, 112), grass_near=(84, 124, 68), water=(70, 86, 108), road=(98, 98, 102),
        dirt=(142, 126, 100), mark=(216, 216, 210), foliage=(46, 90, 50), conifer=(34, 74, 52),
        trunk=(92, 72, 54), window=(110, 128, 150), window_lit=False, light=(0.88, 0.9, 0.93)),
}
PALETTE_ODDS = (0.5, 0.25, 0.25)  # how often each palette is drawn, in PALETTE_NAMES order
# Noise amplitudes (colour units) for the three texture fields: fine grain, horizontal streaks
# (ripples, siding, tiles), coarse blotches.
TEXTURE_AMPLITUDES = {
    SKY: (1.2, 0.0, 2.0), CLOUD: (4.0, 0.0, 5.0), SUN: (0.0, 0.0, 0.0), MOUNTAIN: (4.0, 0.0, 8.0),
    GRASS: (6.0, 2.0, 9.0), WATER: (2.0, 13.0, 3.0), ROAD: (6.0, 0.0, 3.0), TREE: (13.0, 0.0, 6.0),
    TRUNK: (6.0, 0.0, 2.0), WALL: (2.5, 4.0, 2.0), ROOF: (3.0, 8.0, 2.0), DOOR: (2.5, 0.0, 0.0),
    WINDOW: (1.5, 0.0, 0.0),
}
