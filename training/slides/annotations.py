"""Reference annotations of a slide (GeoJSON as QuPath exports it, or Camelyon16's ASAP XML polygons),
and PCam's label per cell from them: a cell is tumor when any of its pixels lies in a tumor polygon."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from defusedxml import ElementTree
from skimage.draw import polygon as fill_polygon

Kind = Literal["tumor", "exclusion"]
SUFFIXES = (".geojson", ".json", ".xml")
"""Annotation files `pcam slide evaluate` looks for beside a slide's stem."""
CAMELYON_GROUPS: dict[str, Kind] = {"tumor": "tumor", "_0": "tumor", "_1": "tumor", "_2": "exclusion",
                                     "exclusion": "exclusion"}  # fmt: skip
"""Camelyon16's annotation groups: _0 and _1 outline metastases, _2 normal tissue cut out of them."""
GEOJSON_CLASSES: dict[str, Kind] = {"tumor": "tumor", "exclusion": "exclusion", "ignore*": "exclusion"}
"""QuPath classifications; a feature without one is a tumor outline."""
SUPERSAMPLE = 8
"""Points per cell side at which polygons are filled: a cell is tumor if any of its points is."""


class AnnotationError(ValueError):
    """An annotation file that cannot be read as tumor outlines."""


@dataclass(frozen=True)
class Annotation:
    """One polygon in level-0 pixels: its outer ring first, then its holes; each ring (K, 2) x, y."""

    kind: Kind
    rings: tuple[np.ndarray, ...]


def read_annotations(path: Path) -> list[Annotation]:
    """The polygons of a .geojson/.json (GeoJSON) or .xml (Camelyon16/ASAP) file."""
    try:
        if path.suffix.lower() == ".xml":
            return _camelyon_xml(path)
        if path.suffix.lower() in (".geojson", ".json"):
            return _geojson(json.loads(path.read_text()))
    except (
        json.JSONDecodeError,
        ElementTree.ParseError,
        AttributeError,
        KeyError,
        TypeError,
        ValueError,
    ) as exc:
        if isinstance(exc, AnnotationError):
            raise AnnotationError(f"{path}: {exc}") from exc
        raise AnnotationError(f"{path}: not a readable annotation file ({exc})") from exc
    raise AnnotationError(f"{path}: annotations must be GeoJSON (.geojson, .json) or Camelyon16 XML (.xml)")


def _ring(points: object) -> np.ndarray:
    ring = np.asarray(points, dtype=np.float64)
    if ring.ndim != 2 or ring.shape[1] < 2 or len(ring) < 3 or not np.isfinite(ring).all():
        raise AnnotationError("a polygon ring needs at least three finite [x, y] points")
    return ring[:, :2]


def _geojson(document: dict) -> list[Annotation]:
    kind = document.get("type")
    if kind == "FeatureCollection":
        features = document["features"]
    else:  # one Feature, or a bare geometry
        features = [document if kind == "Feature" else {"geometry": document}]
    annotations = []
    for feature in features:
        geometry = feature.get("geometry") or {}
        kind = _geojson_kind(feature.get("properties") or {})
        if geometry.get("type") == "Polygon":
            polygons = [geometry["coordinates"]]
        elif geometry.get("type") == "MultiPolygon":
            polygons = geometry["coordinates"]
        else:
            raise AnnotationError(
                f"geometry {geometry.get('type')!r}: only Polygon and MultiPolygon outline areas"
            )
        annotations += [Annotation(kind, tuple(_ring(ring) for ring in rings)) for rings in polygons]
    return annotations


def _geojson_kind(properties: dict) -> Kind:
    classification = properties.get("classification") or {}
    name = str(classification.get("name", "tumor")).lower()
    if name in GEOJSON_CLASSES:
        return GEOJSON_CLASSES[name]
    raise AnnotationError(f"classification {name!r}: use Tumor, Exclusion or Ignore* (or none, for tumor)")


def _camelyon_xml(path: Path) -> list[Annotation]:
    annotations = []
    for element in ElementTree.parse(path).getroot().iter("Annotation"):
        group = element.get("PartOfGroup", "Tumor")
        kind = CAMELYON_GROUPS.get(group.lower())
        if kind is None:
            raise AnnotationError(
                f"annotation group {group!r}: Camelyon16 uses _0, _1, Tumor (tumor), _2 and Exclusion"
            )
        points = sorted(element.iter("Coordinate"), key=lambda c: int(c.get("Order", 0)))
        annotations.append(
            Annotation(kind, (_ring([[float(p.get("X")), float(p.get("Y"))] for p in points]),))
        )
    return annotations


def tumor_cells(annotations: list[Annotation], shape: tuple[int, int], level0_per_cell: float) -> np.ndarray:
    """bool (rows, columns): cells with a point inside a tumor polygon (outside its holes) and outside
    every exclusion polygon, sampled at SUPERSAMPLE points per cell side."""
    fine = (shape[0] * SUPERSAMPLE, shape[1] * SUPERSAMPLE)
    scale = SUPERSAMPLE / level0_per_cell

    def filled(kind: Kind) -> np.ndarray:
        mask = np.zeros(fine, bool)
        for annotation in (a for a in annotations if a.kind == kind):
            area = np.zeros(fine, bool)
            for i, ring in enumerate(annotation.rings):
                # A sample at fine index j stands for level-0 position (j + 0.5) / scale.
                rows, columns = fill_polygon(ring[:, 1] * scale - 0.5, ring[:, 0] * scale - 0.5, fine)
                area[rows, columns] = i == 0  # the outer ring fills, holes cut out
            mask |= area
        return mask

    inside = filled("tumor") & ~filled("exclusion")
    return inside.reshape(shape[0], SUPERSAMPLE, shape[1], SUPERSAMPLE).any(axis=(1, 3))
