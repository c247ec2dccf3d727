"""`pip install .` and `pip install -e .` both provide privfl, privfl.attacks and
privfl.defenses (the latter two mapped from the top-level folders attacks/ and defenses/)."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"privfl": "privfl", "privfl.attacks": "attacks", "privfl.defenses": "defenses"}


def _packages_on_disk() -> set[str]:
    found = set()
    for pkg, folder in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    return found


def test_mapped_folders_are_linked_below_privfl():
    # privfl/attacks and privfl/defenses are links to the top-level folders, so tools that scan
    # privfl/ (grimp for `lint-imports`, pytest's doctests) see the subpackages where their
    # dotted names say they are; one copy of the code, one module per name.
    for pkg, folder in FOLDERS.items():
        if pkg == "privfl":
            continue
        link = ROOT / "privfl" / pkg.split(".")[1]
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve()
    import privfl.attacks
    import privfl.defenses

    assert Path(privfl.attacks.__file__).resolve().parent == (ROOT / "attacks").resolve()
    assert Path(privfl.defenses.__file__).resolve().parent == (ROOT / "defenses").resolve()
    assert "attacks" not in sys.modules and "defenses" not in sys.modules


def test_pyproject_lists_every_package_folder():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert meta["package-dir"] == FOLDERS
    assert set(meta["packages"]) == _packages_on_disk()


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_install_imports_all_three_packages(tmp_path, editable):
    # A copy of the sources, so the build leaves nothing in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in FOLDERS.values():
        shutil.copytree(
            ROOT / folder, src / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    # A bare venv that sees this environment's dependencies through a .pth file.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    target_site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (target_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    cmd = (
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
        ]
        + (["-e"] if editable else [])
        + [str(src)]
    )
    subprocess.run(cmd, check=True, cwd=tmp_path)
    probe = (
        "import importlib, json\n"
        f"mods = {sorted(_packages_on_disk())!r}\n"
        "print(json.dumps({m: importlib.import_module(m).__file__ for m in mods}))\n"
    )
    out = subprocess.run([str(py), "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    files = {m: Path(f) for m, f in json.loads(out.stdout).items()}
    base = src if editable else target_site
    for mod, path in files.items():
        assert base in path.parents, f"{mod} imported from {path}, expected under {base}"
    # the console script is installed too
    assert (venv / "bin" / "privfl").exists()
