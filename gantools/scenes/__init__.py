"""The built-in `scenes` dataset: procedural outdoor scenes with exact per-pixel concept labels.

Each scene has a horizon at a varying height, sky above it (gradient, clouds, sun, mountain ranges)
and ground below it (grass, water, roads, trees and houses standing on the ground). Objects recede
toward the horizon (smaller and higher up when further away) and are drawn far to near, so nearer
objects occlude further ones. Doors and windows sit on walls, roofs on top of walls, trunks under
foliage. Three palettes (day, dusk, overcast), per-object colour jitter, gradients and noise textures
keep the images from being flat colour fields.

Rendering is exact and unaliased: every shape is rasterised with a mask on the pixel grid into an
instance map, each instance has one concept, so a pixel's label is always what is visible there.
Image `i` of seed `s` depends only on `(s, i)` (numpy.random.default_rng([s, i])), never on access
order, and nothing is stored on disk. Vectorised numpy renders a few thousand 64x64 scenes per
second on one CPU core (see benchmarks/scenes_speed.py).

The package is split by element, in the order a scene is drawn:

    design.py    concepts, design versions (SceneDesign, DESIGNS), palettes, texture amplitudes
    texture.py   the noise fields that texture every surface
    canvas.py    the drawing toolkit: random draws, instances, draw operations, rasterisers, layouts
    sky.py       sky, sun, clouds, mountains
    ground.py    grass, water, roads (and which ground is free to stand on)
    house.py     walls, roofs, doors, windows
    tree.py      trunks and foliage
    render.py    composing a scene (`generate`), colouring its pixels (`rasterize`), `render_scene`
    dataset.py   `Scenes` (the dataset) and `concept_frequencies`
    writing.py   `write_scenes` (a labelled folder with concepts.json) and its preview sheet

`gantools.data` registers `Scenes` as the built-in dataset "scenes"; nothing here imports `data`.
"""

from .canvas import SceneLayout, SceneObject
from .dataset import Scenes, concept_frequencies
from .design import (CLOUD, CONCEPTS, DESIGNS, DOOR, GRASS, MAX_SIZE, MIN_SIZE, MOUNTAIN, PALETTE_NAMES, ROAD, ROOF,
                     SKY, SUN, TREE, TRUNK, VERSION, VERSIONS, WALL, WATER, WINDOW, SceneDesign, design)
from .render import render_scene
from .writing import ScenesWritten, WriteScenesResult, save_preview, write_scenes

__all__ = [
    "CONCEPTS", "SKY", "CLOUD", "SUN", "MOUNTAIN", "GRASS", "WATER", "ROAD", "TREE", "TRUNK", "WALL", "ROOF", "DOOR",
    "WINDOW", "PALETTE_NAMES", "MIN_SIZE", "MAX_SIZE", "VERSIONS", "VERSION", "SceneDesign", "DESIGNS", "design",
    "SceneObject", "SceneLayout", "render_scene", "Scenes", "concept_frequencies",
    "WriteScenesResult", "ScenesWritten", "save_preview", "write_scenes",
]
