"""sila.export.buckets: the recipe's [buckets] section, shared by export and the viewer."""

from __future__ import annotations

import pytest

from sila.errors import SilaError
from sila.export.buckets import Buckets, parse_buckets, recipe_buckets
from sila.recipe import load_recipe


def test_edges_are_lower_bounds_and_labels_read_well():
    b = parse_buckets({"short_side": [0, 360, 720], "duration_s": [0, 2, 10]})
    assert b.resolution_labels() == ["0-360p", "360-720p", "720p+"]
    assert b.key(1280, 720, 2.0) == ("720p+", "16:9", "2-10s")  # an edge belongs upward
    assert b.key(640, 359, 1.99) == ("0-360p", "16:9", "0-2s")
    assert b.key(1080, 1920, 45) == ("720p+", "9:16", "10s+")
    assert b.key(None, 720, None) == (None, None, None)


def test_aspect_is_the_nearest_named_ratio():
    b = Buckets()
    assert b.aspect_of(1000, 1000) == "1:1"
    assert b.aspect_of(2560, 1080) == "21:9"
    assert b.aspect_of(1440, 1080) == "4:3"


@pytest.mark.parametrize(
    "section, message",
    [
        ({"short_side": [720, 360]}, "strictly increasing"),
        ({"duration_s": "5"}, "non-empty list"),
        ({"aspect": ["16-9"]}, "W:H"),
        ({"resolution": [1]}, "unknown key"),
    ],
)
def test_bad_sections_name_the_problem(section, message):
    with pytest.raises(SilaError, match=message):
        parse_buckets(section)


def test_the_demo_recipe_defines_buckets():
    b = recipe_buckets(load_recipe("demo"))
    assert b.short_side[0] == 0 and "16:9" in b.aspect
    assert recipe_buckets({}) == Buckets()
