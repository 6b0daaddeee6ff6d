"""The README is where a user looks: what it says must be what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from balancer.defaults import markdown_table

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_defaults_table_is_the_one_the_code_uses() -> None:
    start = README.index("<!-- defaults:")
    start = README.index("\n", start) + 1
    end = README.index("<!-- end of defaults -->")
    assert README[start:end].strip() == markdown_table()


def test_the_two_commands_are_shown() -> None:
    assert "make demo" in README
    assert "make test" in README


def test_every_image_the_readme_shows_is_there() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert images
    for image in images:
        assert (Path(__file__).parent.parent / image).is_file(), image
