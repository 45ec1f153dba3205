"""The integration kit imports with only aiohttp and redis installed (integration services ship it
without the daemon's dependencies): every module of ``integration_kit`` is imported in a fresh
interpreter in which any other third-party package cannot be found — but for the requests adapter,
the one module of the kit's ``requests`` extra, which is imported with requests (and what it needs)
allowed besides. (tests/test_kit_package.py installs the built kit in a fresh venv.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import integration_kit

# aiohttp and redis, and what they themselves import.
ALLOWED = (
    "aiohttp", "yarl", "multidict", "redis", "aiohappyeyeballs", "aiosignal", "frozenlist", "attr", "attrs",
    "propcache", "async_timeout", "idna", "typing_extensions",
)

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.machinery, os, pkgutil, site, sys, sysconfig

    allowed = set(sys.argv[1].split(",")) | {"integration_kit"}
    extra = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else set()  # modules that need an extra

    def dirs(paths):
        return tuple(os.path.realpath(p) + os.sep for p in paths)

    stdlib = dirs(sysconfig.get_path(p) for p in ("stdlib", "platstdlib"))
    installed = dirs([sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()])

    def ours(name, origin):
        if name.partition(".")[0] in allowed:
            return True
        where = os.path.realpath(origin or "")
        return where.startswith(stdlib) and not where.startswith(installed)

    class OnlyAllowed(importlib.machinery.PathFinder):
        # The path finder, blind to every other third-party package (and to the rest of this project):
        # to `import` and to `importlib.util.find_spec` alike, they look uninstalled.
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            spec = super().find_spec(name, path, target)
            if spec is None or ours(name, spec.origin or next(iter(spec.submodule_search_locations or ()), "")):
                return spec
            return None

    # Replace the path finder; drop setuptools' editable finder (it would find checks, alerts, monitor):
    # the kit is found on the path given.
    sys.path.insert(0, sys.argv[2])
    sys.meta_path[:] = [
        OnlyAllowed if f is importlib.machinery.PathFinder else f
        for f in sys.meta_path
        if f is importlib.machinery.PathFinder or f.__module__ in {"_frozen_importlib", "_frozen_importlib_external"}
    ]
    try:
        import pydantic  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        sys.exit("the blocker does not work: pydantic was imported")
    before = set(sys.modules)

    import integration_kit

    for module in pkgutil.walk_packages(integration_kit.__path__, "integration_kit."):
        if module.name in extra:
            continue
        importlib.import_module(module.name)
        print(module.name)
    new = {name: sys.modules[name] for name in set(sys.modules) - before}
    foreign = sorted(n for n, m in new.items() if getattr(m, "__file__", None) and not ours(n, m.__file__))
    if foreign:
        sys.exit(f"the kit loaded third-party modules besides aiohttp and redis: {foreign}")
    """
)


# The `requests` extra: the adapter module and what requests itself imports.
REQUESTS_EXTRA = ("requests", "urllib3", "charset_normalizer", "chardet", "certifi", "idna")
ADAPTER = "integration_kit.requests_adapter"


def test_every_kit_module_imports_with_only_aiohttp_and_redis() -> None:
    root = str(Path(integration_kit.__path__[0]).parent)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(ALLOWED), root, ADAPTER], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = proc.stdout.split()
    assert "integration_kit.retry" in imported and "integration_kit.classify" in imported, imported
    assert "integration_kit.client" in imported and "integration_kit.sync_client" in imported, imported
    assert ADAPTER not in imported


def test_the_requests_adapter_needs_requests_and_nothing_else() -> None:
    root = str(Path(integration_kit.__path__[0]).parent)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join((*ALLOWED, *REQUESTS_EXTRA)), root], capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ADAPTER in proc.stdout.split()


def test_the_check_fails_for_a_kit_module_that_needs_pydantic(tmp_path: Path) -> None:
    # The same script against a copy of the kit with one module importing pydantic must fail.
    copy = tmp_path / "integration_kit"
    shutil.copytree(integration_kit.__path__[0], copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "needs_pydantic.py").write_text("import pydantic\n")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(ALLOWED), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "No module named 'pydantic'" in proc.stderr, proc.stderr[-3000:]
