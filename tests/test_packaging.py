"""Packaging: one version everywhere; the Linux bundle builds, starts offscreen and imports data (slow).

The slow test runs `python packaging/build.py --fast` into a temporary folder (PyInstaller one-folder build,
.tar.gz, .deb; ~1-3 min on 2 cores), then runs the built programs with HOME and the XDG folders pointing into the
temporary folder, so the real user's settings and data are never touched.
"""
from __future__ import annotations

import configparser
import importlib.util as _ilu
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
_spec = _ilu.spec_from_file_location("hitl_packaging_build", PACKAGING / "build.py")
hb = _ilu.module_from_spec(_spec)
sys.modules["hitl_packaging_build"] = hb
_spec.loader.exec_module(hb)  # packaging/build.py, loaded by path (`build` is also a PyPI package's name)

PYPROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


# ---------------------------------------------------------------------------------------------- fast checks
def test_one_version_in_source_tree():
    import hitl_desktop
    from hitl_desktop._version_fallback import VERSION

    assert hb.read_version() == PYPROJECT_VERSION
    assert VERSION == PYPROJECT_VERSION, "run `python packaging/build.py` (it rewrites _version_fallback.py)"
    assert hitl_desktop.__version__ == PYPROJECT_VERSION, "reinstall the package: its metadata is stale"
    assert hb.fallback_source(PYPROJECT_VERSION) == (ROOT / "hitl_desktop" / "_version_fallback.py").read_text()


def test_version_in_names_and_control_file():
    v = PYPROJECT_VERSION
    assert hb.bundle_name(v).startswith(f"hitl-desktop-{v}-")
    assert hb.deb_name(v).startswith(f"hitl-desktop_{v}_")
    control = hb.deb_control(v, 1234)
    fields = dict(line.split(": ", 1) for line in control.splitlines() if line and not line.startswith(" "))
    assert fields["Version"] == v
    assert fields["Package"] == "hitl-desktop"
    assert fields["Installed-Size"] == "1234"
    iss = (PACKAGING / "windows" / "hitl-desktop.iss").read_text()
    assert "AppVersion={#AppVersion}" in iss and "PrivilegesRequired=lowest" in iss


def test_version_shown_by_cli_and_window(capsys):
    from hitl_desktop.cli.main import main as cli_main
    from hitl_desktop.gui.app import _parser

    with pytest.raises(SystemExit):
        cli_main(["--version"])
    assert capsys.readouterr().out.strip() == f"hitl-desktop {PYPROJECT_VERSION}"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"hitl-desktop {PYPROJECT_VERSION}"


def test_desktop_entry():
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(PACKAGING / "linux" / "hitl-desktop.desktop")
    entry = cp["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Exec"].split()[0] == f"{hb.INSTALL_DIR}/hitl-desktop"
    assert entry["Icon"] == "hitl-desktop"
    svg, pngs = hb.icon_files()
    assert svg is not None or pngs, "resources/icons has no hitl-desktop icon"


def test_staging_lays_out_package_like_a_wheel(tmp_path):
    stage = hb.stage_sources(PYPROJECT_VERSION, tmp_path / "stage")
    pkg = stage / "hitl_desktop"
    assert (pkg / "resources" / "demo" / "penguins_field_notes.csv").is_file()
    assert (pkg / "resources" / "__init__.py").is_file()
    assert (pkg / "_version_fallback.py").read_text() == hb.fallback_source(PYPROJECT_VERSION)
    dests = {(Path(src).name, dest.replace(os.sep, "/")) for src, dest in hb.package_data_files(stage)}
    assert ("env.py", "hitl_desktop/core/migrations") in dests
    assert ("0001_core_schema.py", "hitl_desktop/core/migrations/versions") in dests
    assert ("penguins_field_notes.csv", "hitl_desktop/resources/demo") in dests
    assert ("project.py", "hitl_desktop/core") not in dests  # modules go to the archive, not as files
    assert not any(name.endswith(".pyc") for name, _ in dests)


def test_app_imports_nothing_the_bundle_excludes():
    """A module the app imports must not be in build.EXCLUDES (e.g. a newly used Qt module such as QtPrintSupport):
    the frozen program would fail where the tests (run from source) pass. Optional extras are allowed."""
    import ast

    optional = {"distributed", "dask"}  # the optional Dask backend: imported in a try, says "pip install ..."
    excluded = set(hb.EXCLUDES)
    offenders = []
    for path in (ROOT / "hitl_desktop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                hit = next((".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in excluded),
                           None)
                if hit and parts[0] not in optional:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, f"imported but excluded from the bundle (packaging/build.py EXCLUDES): {offenders}"


def test_prune_patterns():
    toc = [("pyarrow/libarrow_flight.so.2600", "x", "BINARY"), ("pyarrow/libarrow.so.2600", "x", "BINARY"),
           ("PySide6/Qt/plugins/platforms/libqxcb.so", "x", "BINARY"),
           ("PySide6/Qt/plugins/platforms/libqvnc.so", "x", "BINARY"),
           ("PySide6/Qt/translations/qtbase_de.qm", "x", "DATA"),
           ("PySide6/Qt/translations/qtwebengine_de.qm", "x", "DATA"), ("pyarrow/include/arrow/api.h", "x", "DATA")]
    kept = {dest for dest, *_ in hb.prune(toc)}
    assert kept == {"pyarrow/libarrow.so.2600", "PySide6/Qt/plugins/platforms/libqxcb.so",
                    "PySide6/Qt/translations/qtbase_de.qm"}


# ---------------------------------------------------------------------------------------------- the build
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("the smoke test builds the Linux bundle")
    pytest.importorskip("PyInstaller", reason="pip install -e '.[test]' installs PyInstaller")
    base = tmp_path_factory.mktemp("packaging")
    build_dir, dist_dir = base / "build", base / "dist"
    proc = subprocess.run([sys.executable, str(PACKAGING / "build.py"), "--fast", "--build-dir", str(build_dir),
                           "--dist-dir", str(dist_dir)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    print(proc.stdout)
    folder = dist_dir / hb.bundle_name(PYPROJECT_VERSION)
    home = base / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "XDG_", "HITL_", "QT_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_STATE_HOME=str(home / ".local" / "state"),
               XDG_RUNTIME_DIR=str(base / "run"), HITL_SETTINGS_FILE=str(base / "settings.ini"),
               QT_QPA_PLATFORM="offscreen", TMPDIR=str(base))
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    return {"base": base, "dist": dist_dir, "folder": folder, "env": env}


def _offline_prefix() -> list[str]:
    """["unshare", "-n"] (no network at all) where this machine allows it, else []."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


def run(built, *argv, timeout=180, **kw):
    return subprocess.run([str(a) for a in argv], env=kw.pop("env", built["env"]), cwd=built["base"],
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_linux_bundle_outputs_and_size(built):
    v = PYPROJECT_VERSION
    folder = built["folder"]
    assert (folder / "hitl-desktop").is_file() and os.access(folder / "hitl-desktop", os.X_OK)
    assert (folder / "hitl").is_file() and os.access(folder / "hitl", os.X_OK)
    assert (folder / "_internal" / "hitl_desktop" / "core" / "migrations" / "versions" / "0001_core_schema.py").is_file()
    assert (folder / "_internal" / "hitl_desktop" / "resources" / "demo" / "penguins_field_notes.csv").is_file()
    internal = folder / "_internal"
    assert not list(internal.glob("PySide6/Qt/lib/libQt6WebEngine*")), "WebEngine must not be bundled"
    assert not list(internal.glob("PySide6/Qt/lib/libQt6Quick*")), "QtQuick must not be bundled"
    size_mb = hb.dir_size(folder) / 1e6
    print(f"\nLinux bundle: {size_mb:.0f} MB unpacked (target < 200 MB)")
    assert size_mb < 520, f"bundle grew to {size_mb:.0f} MB: check the excludes in packaging/build.py"

    tgz = built["dist"] / f"{hb.bundle_name(v)}.tar.gz"
    with tarfile.open(tgz) as tar:
        names = set(tar.getnames())
    assert f"{folder.name}/hitl" in names and f"{folder.name}/hitl-desktop" in names

    deb = built["dist"] / hb.deb_name(v)
    info = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"], capture_output=True,
                          text=True, check=True).stdout
    assert f"Package: hitl-desktop\nVersion: {v}\n" in info
    contents = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "./opt/hitl-desktop/hitl\n" in contents and "./opt/hitl-desktop/hitl-desktop\n" in contents
    assert "./usr/bin/hitl -> /opt/hitl-desktop/hitl" in contents
    assert "./usr/share/applications/hitl-desktop.desktop" in contents
    assert "./usr/share/icons/hicolor/256x256/apps/hitl-desktop.png" in contents
    assert "root/root" in contents.splitlines()[0]


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


GLIBC = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2",
         "ld-linux-aarch64.so.1", "libutil.so.1", "libresolv.so.2"}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_deb_depends_cover_the_system_libraries(built):
    """Every library a bundled ELF file needs is bundled, or its Debian package is in Depends/Recommends."""
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) not installed")
    folder = built["folder"]
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
             and (".so" in p.name or p.parent == folder) and _is_elf(p)]
    bundled = {p.name for p in folder.rglob("*") if ".so" in p.name}
    needed: set[str] = set()
    for f in files:
        out = subprocess.run(["readelf", "-d", str(f)], capture_output=True, text=True).stdout
        needed.update(line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line)
    external = needed - bundled - GLIBC
    control = hb.deb_control(PYPROJECT_VERSION, 0)
    declared = set()
    for line in control.splitlines():
        if line.startswith(("Depends:", "Recommends:")):
            declared.update(alt.strip().split()[0] for dep in line.split(":", 1)[1].split(",")
                            for alt in dep.split("|"))
    undeclared = []
    for lib in sorted(external):
        q = subprocess.run(["dpkg", "-S", f"*/{lib}"], capture_output=True, text=True)
        if q.returncode != 0:
            continue  # not installed here: cannot map it to a package
        pkgs = {entry.split(":")[0] for entry in q.stdout.splitlines()}
        if not pkgs & declared:
            undeclared.append(f"{lib} ({', '.join(sorted(pkgs))})")
    assert not undeclared, f"add to Depends in packaging/build.py: {undeclared}"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_built_programs_report_the_version(built):
    for exe in ("hitl", "hitl-desktop"):
        p = run(built, built["folder"] / exe, "--version", timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == f"hitl-desktop {PYPROJECT_VERSION}"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_built_libraries_work(built):
    """Every bundled library imports and works, including joblib's loky worker processes."""
    p = run(built, *_offline_prefix(), built["folder"] / "hitl", "--frozen-selfcheck")
    report = json.loads(p.stdout)
    assert p.returncode == 0 and all(v == "ok" for v in report.values()), json.dumps(report, indent=1) + p.stderr


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_built_window_self_test_offscreen(built):
    # without a network where the machine allows it (unshare -n): the program must work offline
    p = run(built, *_offline_prefix(), built["folder"] / "hitl-desktop", "--self-test", timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    assert "self-test: OK" in p.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_built_cli_imports_via_symlink_on_path(built, tmp_path):
    """`hitl` on the PATH is a symlink into the bundle (as the .deb installs it); init + import + batches."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "hitl").symlink_to(built["folder"] / "hitl")
    env = dict(built["env"], PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", HITL_PASSWORD="s3cret-pw!")
    data = tmp_path / "small.csv"
    data.write_text("id,length_mm,species\n" + "".join(f"{i},{30 + i % 7}.5,{'AB'[i % 2]}\n" for i in range(60)))
    proj = tmp_path / "proj"
    hitl = shutil.which("hitl", path=env["PATH"])
    assert hitl == str(bindir / "hitl")
    p = run(built, "hitl", "init", proj, "--name", "smoke", env=env)
    assert p.returncode == 0, p.stderr
    p = run(built, "hitl", "import", proj, data, "--label", "species", "--batch-size", "25", "--json", env=env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["rows"] == 60 and len(out["batches"]) == 3
    p = run(built, "hitl", "batches", proj, "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert [b["rows"] for b in sorted(json.loads(p.stdout), key=lambda b: b["id"])] == [25, 25, 10]
    p = run(built, "hitl", "import", proj, tmp_path / "missing.csv", env=env)
    assert p.returncode == 2 and p.stderr.startswith("hitl: error:")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_deb_payload_runs(built, tmp_path):
    """The .deb's payload, unpacked, runs: /opt/hitl-desktop/hitl --version."""
    deb = built["dist"] / hb.deb_name(PYPROJECT_VERSION)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    p = run(built, tmp_path / "opt" / "hitl-desktop" / "hitl", "--version", timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"hitl-desktop {PYPROJECT_VERSION}", p.stderr
    desktop = (tmp_path / "usr" / "share" / "applications" / "hitl-desktop.desktop").read_text()
    assert "Exec=/opt/hitl-desktop/hitl-desktop" in desktop
