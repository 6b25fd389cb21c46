"""Installed package versions, recorded in bundles and bench reports."""

from __future__ import annotations

from contextlib import suppress


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """``{package: version}`` for those of ``packages`` that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for pkg in packages:
        with suppress(PackageNotFoundError):
            found[pkg] = version(pkg)
    return found
