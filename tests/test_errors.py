"""errors.first_line / error_summary: the one "first line of an exception" idiom."""

import pytest

from silo_rt.errors import SiloError, error_summary, first_line


@pytest.mark.parametrize("exc, expected", [
    (ValueError("bad shape\nat node 3\n"), "bad shape"),
    (ValueError("\n\n   bad shape  \nat node 3"), "bad shape"),  # leading blank lines
    (RuntimeError("one line"), "one line"),
    (KeyError(), "KeyError"),  # empty message: the type name, no IndexError
    (OSError("  \n\t\n"), "OSError"),  # blank message
    (SiloError("cannot read x.png"), "cannot read x.png"),
])
def test_first_line_of_an_exception(exc, expected):
    assert first_line(exc) == expected


@pytest.mark.parametrize("text, expected", [
    ("a\nb", "a"), ("\n\n  b  \nc", "b"), ("", ""), ("\n \n", ""), ("only", "only"),
])
def test_first_line_of_a_text(text, expected):
    assert first_line(text) == expected


def test_first_line_survives_a_broken_str():
    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert first_line(Broken()) == "Broken"


def test_error_summary_names_the_type_except_for_silo_errors():
    assert error_summary(ValueError("\nbad\nmore")) == "ValueError: bad"
    assert error_summary(SiloError("bundle is for gb\nhint")) == "bundle is for gb"
    assert error_summary(MemoryError()) == "MemoryError"
    assert error_summary(SiloError("")) == "SiloError"


def test_no_module_takes_the_first_line_of_a_message_by_hand():
    """``str(exc).splitlines()[0]`` raises IndexError on an empty message: first_line it is."""
    from pathlib import Path

    import silo_rt

    root = Path(silo_rt.__file__).parent
    by_hand = [str(p.relative_to(root)) for p in sorted(root.rglob("*.py"))
               if "splitlines()[0]" in p.read_text()]
    assert by_hand == []
