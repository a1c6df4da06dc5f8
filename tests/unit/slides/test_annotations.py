"""Reference outlines (GeoJSON, Camelyon16 XML) to PCam's label per cell: holes and exclusions cut out,
and the regions `pcam slide predict` writes read back to exactly their cells."""

import json
from pathlib import Path

import numpy as np
import pytest

from training.slides.annotations import AnnotationError, read_annotations, tumor_cells
from training.slides.grid import CellGrid
from training.slides.outputs import write_outputs
from training.slides.reader import Slide
from training.slides.scoring import Progress

TO_LEVEL0 = 64.0  # level-0 pixels per cell side (32-px cells, two level-0 pixels per PCam pixel)
SHAPE = (12, 14)


def square(left: float, top: float, right: float, bottom: float) -> list[list[float]]:
    """A closed ring around cells [left, right) x [top, bottom), in level-0 pixels."""
    corners = [(left, top), (right, top), (right, bottom), (left, bottom), (left, top)]
    return [[x * TO_LEVEL0, y * TO_LEVEL0] for x, y in corners]


def geojson(path: Path, *polygons: tuple[list, str | None]) -> Path:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {} if name is None else {"classification": {"name": name}},
        }
        for rings, name in polygons
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def camelyon_xml(path: Path, *polygons: tuple[list, str]) -> Path:
    """Camelyon16's ASAP format: one Annotation per polygon, points with their Order."""
    annotations = "".join(
        f'<Annotation Name="A{i}" Type="Polygon" PartOfGroup="{group}"><Coordinates>'
        + "".join(f'<Coordinate Order="{k}" X="{x}" Y="{y}" />' for k, (x, y) in enumerate(ring[:-1]))
        + "</Coordinates></Annotation>"
        for i, (ring, group) in enumerate(polygons)
    )
    path.write_text(
        f'<?xml version="1.0"?><ASAP_Annotations><Annotations>{annotations}</Annotations></ASAP_Annotations>'
    )
    return path


def cells(*blocks: tuple[slice, slice]) -> np.ndarray:
    expected = np.zeros(SHAPE, bool)
    for rows, columns in blocks:
        expected[rows, columns] = True
    return expected


def test_a_cell_is_tumor_when_any_of_it_lies_in_a_tumor_polygon(tmp_path: Path) -> None:
    exact = geojson(tmp_path / "a.geojson", ([square(2, 3, 5, 6)], "Tumor"))
    np.testing.assert_array_equal(
        tumor_cells(read_annotations(exact), SHAPE, TO_LEVEL0), cells((slice(3, 6), slice(2, 5)))
    )
    # A sliver of a cell is enough (PCam's rule: any tumor pixel in the center 32x32).
    sliver = geojson(tmp_path / "b.geojson", ([square(2, 3, 5.2, 6)], None))
    np.testing.assert_array_equal(
        tumor_cells(read_annotations(sliver), SHAPE, TO_LEVEL0), cells((slice(3, 6), slice(2, 6)))
    )


def test_holes_and_exclusions_are_cut_out(tmp_path: Path) -> None:
    ring_with_hole = [square(1, 1, 8, 8), square(3, 3, 6, 6)]
    expected = cells((slice(1, 8), slice(1, 8))) & ~cells((slice(3, 6), slice(3, 6)))
    with_hole = geojson(tmp_path / "hole.geojson", (ring_with_hole, "Tumor"))
    np.testing.assert_array_equal(tumor_cells(read_annotations(with_hole), SHAPE, TO_LEVEL0), expected)
    excluded = camelyon_xml(tmp_path / "c16.xml", (square(1, 1, 8, 8), "_0"), (square(3, 3, 6, 6), "_2"))
    np.testing.assert_array_equal(tumor_cells(read_annotations(excluded), SHAPE, TO_LEVEL0), expected)
    qupath_exclusion = geojson(
        tmp_path / "ignore.geojson", ([square(1, 1, 8, 8)], "Tumor"), ([square(3, 3, 6, 6)], "Ignore*")
    )
    np.testing.assert_array_equal(tumor_cells(read_annotations(qupath_exclusion), SHAPE, TO_LEVEL0), expected)


def test_camelyon_xml_and_geojson_of_one_outline_agree(tmp_path: Path) -> None:
    ring = [[100.0, 130.0], [600.0, 90.0], [700.0, 500.0], [260.0, 640.0], [100.0, 130.0]]
    from_xml = read_annotations(camelyon_xml(tmp_path / "x.xml", (ring, "Tumor")))
    from_geojson = read_annotations(geojson(tmp_path / "x.geojson", ([ring], "Tumor")))
    xml_cells = tumor_cells(from_xml, SHAPE, TO_LEVEL0)
    assert 20 < xml_cells.sum() < 80
    np.testing.assert_array_equal(xml_cells, tumor_cells(from_geojson, SHAPE, TO_LEVEL0))


def test_the_regions_predict_writes_read_back_to_their_cells(synthetic_slide, tmp_path: Path) -> None:
    """A ring of tumor cells around a hole, and two blocks touching at a corner: one region, one outline."""
    with Slide(synthetic_slide.path) as slide:
        grid = CellGrid.over(slide.size)
        tissue = np.ones(grid.shape, bool)
        progress = Progress.empty(grid, "k")
        progress.probability[tissue] = 0.1
        tumor = np.zeros(grid.shape, bool)
        tumor[2:9, 2:9] = True
        tumor[4:7, 4:7] = False  # the hole
        tumor[10:12, 10:12] = tumor[12:14, 12:14] = True  # diagonal neighbours
        progress.probability[tumor] = 0.9
        progress.done[tissue], progress.release, progress.threshold = True, "rel", 0.5
        summary = write_outputs(tmp_path, slide, grid, slide.thumbnail(32), tissue, progress, "balanced")
        to_level0 = 32 * slide.resolution.factor
    assert summary.regions == 2
    annotations = read_annotations(tmp_path / "synthetic.regions.geojson")
    assert sorted(len(a.rings) for a in annotations) == [1, 2]  # the ring has its hole
    for ring in (ring for a in annotations for ring in a.rings):
        assert (ring[0] == ring[-1]).all()  # closed, as GeoJSON wants
        assert ((np.diff(ring, axis=0) == 0).sum(axis=1) == 1).all()  # along cell edges only
    np.testing.assert_array_equal(tumor_cells(annotations, grid.shape, to_level0), tumor)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("a.geojson", '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": '
                      '{"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}]}', "LineString"),
        ("b.geojson", '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [9, 0], '
                      '[9, 9]]]}, "properties": {"classification": {"name": "Stroma"}}}', "stroma"),
        ("c.geojson", '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}',
         "three"),
        ("d.json", "{not json", "not a readable annotation file"),
        ("d2.json", "[1, 2]", "not a readable annotation file"),
        ("d3.json", '{"type": "FeatureCollection", "features": [{"geometry": {"type": "Polygon", "coordinates": '
                    '[[[0, 0], [1, 0, 0], [1]]]}}]}', "not a readable annotation file"),
        ("e.xml", '<ASAP_Annotations><Annotations><Annotation PartOfGroup="Lymph"><Coordinates>'
                  '</Coordinates></Annotation></Annotations></ASAP_Annotations>', "Lymph"),
        ("f.xml", "<ASAP_Annotations><Annotations>", "not a readable annotation file"),
        ("g.txt", "", "GeoJSON"),
    ],
)  # fmt: skip
def test_an_unreadable_file_is_named_with_its_problem(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(AnnotationError, match=problem) as raised:
        read_annotations(path)
    assert str(path) in str(raised.value)
