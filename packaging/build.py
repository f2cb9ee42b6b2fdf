#!/usr/bin/env python3
"""Build hitl-desktop's frozen bundle and installers: `python packaging/build.py` (see packaging/README.md).

Steps: read the version from pyproject.toml; write hitl_desktop/_version_fallback.py from it; stage the sources as
an installed wheel would lay them out; run PyInstaller on packaging/hitl_desktop.spec; then per platform:

* Linux: packaging/dist/hitl-desktop-VERSION-linux-ARCH/ (folder), the same as .tar.gz, and
  hitl-desktop_VERSION_DEBARCH.deb (installs to /opt/hitl-desktop, /usr/bin/hitl and /usr/bin/hitl-desktop,
  a .desktop entry and hicolor icons). Needs dpkg-deb for the .deb (skipped with a note if absent).
* Windows: the folder, then the Inno Setup installer if `iscc` is on PATH (packaging/windows/hitl-desktop.iss).
* macOS: "HITL Desktop.app", then a .dmg via packaging/macos/make_dmg.sh (hdiutil).

Works offline; needs PyInstaller in the running environment (`pip install pyinstaller`, or the `test` extra).
This module is also imported by the spec and by the tests for the version, the names and the staging.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent
BUILD = PACKAGING / "build"
DIST = PACKAGING / "dist"
APP = "hitl-desktop"
INSTALL_DIR = "/opt/hitl-desktop"

# Modules loaded by name that static analysis can miss. Most of sklearn/scipy/pandas/pyarrow is covered by
# PyInstaller's hooks (pyinstaller-hooks-contrib); these are the extras this app needs.
HIDDEN_IMPORTS = [
    "sklearn.utils._typedefs",
    "sklearn.utils._heap",
    "sklearn.utils._sorting",
    "sklearn.utils._vector_sentinel",
    "sklearn.neighbors._partition_nodes",
    "sklearn.utils._cython_blas",
    "sklearn.tree._utils",
    "scipy._lib.array_api_compat.numpy.fft",
    "scipy._lib.array_api_compat.numpy.linalg",
    "pyarrow.vendored.version",
    "sqlalchemy.dialects.sqlite",
    "alembic.runtime.migration",
    "alembic.ddl.sqlite",
    "joblib.externals.loky.backend.popen_loky_posix",
    "joblib.externals.loky.backend.resource_tracker",
    "platformdirs.unix",
    "platformdirs.windows",
    "platformdirs.macos",
]

# Modules the app never uses. Qt: everything but QtCore/QtGui/QtWidgets (+ QtSvg for the icon's image plugin);
# the rest are development tools, test suites and GUI toolkits that libraries import optionally.
EXCLUDES = [
    "tkinter", "_tkinter", "turtle", "idlelib", "pydoc_data", "lib2to3", "unittest.mock",
    "IPython", "jupyter_client", "ipykernel", "notebook", "nbformat", "pytest", "_pytest",
    "setuptools", "pkg_resources", "pip", "wheel", "distutils", "docutils", "sphinx",
    "PyQt5", "PyQt6", "PySide2", "gi", "wx", "cairo", "cairocffi",
    "PySide6.QtNetwork", "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtQuickWidgets",
    "PySide6.QtQuickControls2", "PySide6.QtQuickTest", "PySide6.QtQmlFeatures", "PySide6.QtDesigner",
    "PySide6.QtHelp", "PySide6.QtUiTools", "PySide6.QtSql", "PySide6.QtTest", "PySide6.QtXml",
    "PySide6.QtConcurrent", "PySide6.QtDBus", "PySide6.QtOpenGL", "PySide6.QtOpenGLWidgets",
    "PySide6.QtPrintSupport", "PySide6.QtLabsStyleKit", "PySide6.QtWebEngineCore", "PySide6.QtWebEngineWidgets",
    "PySide6.QtMultimedia", "PySide6.Qt3DCore", "PySide6.QtCharts", "PySide6.QtDataVisualization",
    "PySide6.QtBluetooth", "PySide6.QtPositioning", "PySide6.QtSerialPort", "PySide6.QtWebSockets",
    "PySide6.scripts", "shiboken6.Shiboken.pyi",
    "pyarrow.tests", "pyarrow.flight", "pyarrow.cuda", "pyarrow.gandiva", "pyarrow.substrait",
    "pyarrow._flight", "pyarrow._cuda", "pyarrow._gandiva", "pyarrow._substrait",
    "pyarrow.orc", "pyarrow._orc", "pyarrow._s3fs", "pyarrow._gcsfs", "pyarrow._azurefs", "pyarrow._hdfs",
    "pandas.tests", "pandas.io.clipboard", "pandas.io.formats.style", "pandas.plotting._matplotlib",
    "numpy.tests", "numpy.distutils", "numpy.testing.tests",
    "scipy.io.matlab.tests", "sklearn.datasets.tests", "sklearn.externals.array_api_compat.torch",
    "sklearn.externals.array_api_compat.cupy", "sklearn.externals.array_api_compat.dask",
    "sklearn.externals.array_api_strict", "torch", "cupy", "dask", "jax", "numba", "sympy",
    "matplotlib.tests", "mpl_toolkits.mplot3d.tests", "matplotlib.backends.backend_tk",
    "matplotlib.backends.backend_tkagg", "matplotlib.backends.backend_gtk3", "matplotlib.backends.backend_gtk4",
    "matplotlib.backends.backend_wx", "matplotlib.backends.backend_wxagg", "matplotlib.backends.backend_webagg",
    "matplotlib.backends.backend_nbagg", "tornado", "fsspec", "s3fs", "gcsfs", "botocore", "boto3",
    "psycopg2", "pymysql", "MySQLdb", "cx_Oracle", "oracledb", "pyodbc", "asyncpg", "aiosqlite",
    "sqlalchemy.testing", "alembic.testing", "cryptography.hazmat.backends.openssl.backend_test",
    "xlrd", "xlsxwriter", "odf", "pyxlsb", "python_calamine", "bs4", "lxml", "html5lib", "tables", "h5py",
    # the optional dask backend of the pipeline (settings.joblib_backend = dask) is not bundled: it needs a
    # cluster anyway, and the app says "pip install dask distributed" when it is selected
    "dask", "distributed", "joblib._dask", "click", "yaml", "jinja2", "pygments", "mako.ext.pygmentplugin",
    "rich", "requests", "urllib3", "PIL._avif", "PIL._webp", "PIL.ImageTk", "PIL._imagingtk", "PIL.ImageQt",
    "readline", "curses", "xmlrpc", "ftplib", "smtplib", "imaplib", "poplib", "nntplib", "telnetlib",
]

# Shared libraries from /lib and /usr/lib (Linux) are left to the system (the .deb depends on them), except
# these, which the program needs and minimal or older systems may lack (Qt 6's xcb prerequisites, Python's own).
SYSTEM_LIBRARY_EXCEPTIONS = [
    "libffi.so*", "libssl.so*", "libcrypto.so*", "libsqlite3.so*", "libbz2.so*", "liblzma.so*", "libz.so*",
    "libexpat.so*", "libuuid.so*", "libmpdec.so*", "libxcb-cursor.so*", "libxcb-icccm.so*", "libxcb-image.so*",
    "libxcb-keysyms.so*", "libxcb-render-util.so*", "libxcb-util.so*", "libxcb-xkb.so*", "libxkbcommon*.so*",
]

# Collected files (destination paths, "/"-separated) to drop after analysis: headers and Cython sources, and
# shared libraries of features the app does not use (Arrow Flight RPC, Substrait, S3; Qt modules excluded above).
PRUNE_PATTERNS = [
    r"^pyarrow/include/", r"^pyarrow/src/", r"^pyarrow/.*\.(pxd|pyx|pxi|h|hpp|cc)$",
    r"(^|/)libarrow_flight\.so", r"(^|/)libarrow_python_flight\.so", r"(^|/)libarrow_s3\.so",
    r"^pyarrow/libarrow_python\.so$", r"^pyarrow/libarrow_python\.so\.\d+\.\d+\.\d+$",
    r"^numpy/_core/include/", r"^numpy/_core/lib/", r"^numpy/.*\.(pxd|pyx|h)$",
    r"^scipy/.*\.(pxd|pyx|h)$", r"^sklearn/.*\.(pxd|pyx|pxi|tp|h|c|cpp)$", r"^sklearn/.*/tests/",
    r"^pandas/.*\.(pxd|pyx|h)$", r"/tests?/.*\.(csv|json|npz|npy|txt|dat|arff|mat|gz|bz2|xz|zip|wav)$",
    r"^matplotlib/mpl-data/sample_data/", r"^matplotlib/mpl-data/images/.*\.(pdf|svg)$",
    r"^matplotlib/mpl-data/fonts/(afm|pdfcorefonts)/",
    r"^PySide6/Qt/translations/(?!qtbase_)",
    # Qt plugins: keep the desktop platforms (xcb, wayland; offscreen/minimal for headless use), input methods,
    # the portal theme, SVG icons and common image formats. The GTK3 theme would drag in GTK/cairo/pango.
    r"^PySide6/Qt/plugins/(generic|egldeviceintegrations|sqldrivers|tls|networkinformation|multimedia|qmltooling)/",
    r"^PySide6/Qt/plugins/platforms/lib(qvnc|qlinuxfb|qeglfs|qminimalegl|qvkkhrdisplay)\.so",
    r"^PySide6/Qt/plugins/platformthemes/libqgtk3\.so", r"^PySide6/Qt/plugins/imageformats/libq(tiff|webp|wbmp|tga|icns)\.so",
    r"(^|/)libQt6(Network|EglFSDeviceIntegration|EglFsKmsSupport|Pdf|Qml\w*|Quick\w*|VirtualKeyboard\w*)\.so",
]


def prune(toc, patterns=None):
    """Drop entries of a PyInstaller TOC (dest, src, kind) whose destination matches PRUNE_PATTERNS."""
    import re

    rx = re.compile("|".join(f"(?:{p})" for p in (patterns or PRUNE_PATTERNS)))
    return [entry for entry in toc if not rx.search(str(entry[0]).replace(os.sep, "/"))]

# Linux: shared libraries that carry debug symbols and are safe to `strip --strip-unneeded` (~45 MB). Not the
# auditwheel-repaired ones (numpy.libs, scipy.libs, pillow.libs, and modules linking them): strip(1) breaks
# patchelf-ed files ("ELF load command address/offset not page-aligned"). The self-check loads every one of these.
STRIP_PATTERNS = [
    r"^libpython3\.\d+\.so", r"^python3\.\d+/lib-dynload/", r"^pyarrow/lib(arrow|parquet)\w*\.so",
    r"^kiwisolver/_cext\.", r"^cryptography/hazmat/bindings/_rust\.", r"^sqlalchemy/.*_cy\.cpython",
]

# Files under the package never shipped: byte code, the demo-data generator script.
_SKIP_DIRS = {"__pycache__"}
_SKIP_FILES = {"make_demo_data.py"}


# ---------------------------------------------------------------------------------------------- version and names
def read_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The one version number: [project] version in pyproject.toml."""
    import tomllib

    with open(pyproject, "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def fallback_source(version: str) -> str:
    return ('"""Version used when package metadata is unavailable (frozen builds write this file from '
            'pyproject.toml)."""\n'
            f'VERSION = "{version}"\n')


def write_version_fallback(version: str, path: Path = ROOT / "hitl_desktop" / "_version_fallback.py") -> bool:
    """Write hitl_desktop/_version_fallback.py for `version`; return True if it changed."""
    text = fallback_source(version)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def platform_tag() -> str:
    """linux-x86_64, windows-x64, macos-arm64, ..."""
    machine = platform.machine().lower() or "unknown"
    if sys.platform.startswith("linux"):
        return f"linux-{machine}"
    if sys.platform == "win32":
        return "windows-x64" if machine in ("amd64", "x86_64") else f"windows-{machine}"
    if sys.platform == "darwin":
        return f"macos-{machine}"
    return f"{sys.platform}-{machine}"


def bundle_name(version: str) -> str:
    return f"{APP}-{version}-{platform_tag()}"


def deb_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}.get(platform.machine(), platform.machine())


def deb_name(version: str) -> str:
    return f"{APP}_{version}_{deb_arch()}.deb"


# ---------------------------------------------------------------------------------------------- staging
def stage_sources(version: str, stage: Path = BUILD / "stage") -> Path:
    """Copy hitl_desktop/ and resources/ (as hitl_desktop/resources) into `stage`, as a wheel installs them."""
    if stage.exists():
        shutil.rmtree(stage)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    pkg = stage / "hitl_desktop"
    shutil.copytree(ROOT / "hitl_desktop", pkg, ignore=ignore)
    if (pkg / "resources").exists():
        shutil.rmtree(pkg / "resources")
    shutil.copytree(ROOT / "resources", pkg / "resources", ignore=ignore)
    (pkg / "_version_fallback.py").write_text(fallback_source(version), encoding="utf-8")
    return stage


def package_data_files(stage: str | os.PathLike) -> list[tuple[str, str]]:
    """(source file, destination folder) pairs for PyInstaller: every non-.py file under the staged package, all
    of hitl_desktop/resources, and the Alembic migration scripts (read from disk by Alembic)."""
    stage = Path(stage)
    pkg = stage / "hitl_desktop"
    migrations = pkg / "core" / "migrations"
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        here = Path(dirpath)
        for name in sorted(filenames):
            f = here / name
            if name in _SKIP_FILES or f.suffix in (".pyc", ".pyo"):
                continue
            is_py = f.suffix == ".py"
            in_migrations = migrations in f.parents
            in_resources = (pkg / "resources") in f.parents
            if is_py and not (in_migrations or in_resources):
                continue  # ordinary modules live in the PYZ archive
            out.append((str(f), str(here.relative_to(stage))))
    return out


# ---------------------------------------------------------------------------------------------- steps
def run_pyinstaller(version: str, stage: Path, clean: bool) -> Path:
    name = bundle_name(version)
    env = dict(os.environ, HITL_STAGE=str(stage), HITL_BUNDLE_NAME=name)
    pyi_dist = BUILD / "pyinstaller-dist"
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(pyi_dist), "--workpath", str(BUILD / "pyinstaller-work"),
           str(PACKAGING / "hitl_desktop.spec")]
    if clean:
        cmd.insert(3, "--clean")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    DIST.mkdir(parents=True, exist_ok=True)
    if sys.platform == "darwin":
        src = pyi_dist / "HITL Desktop.app"
        dest = DIST / "HITL Desktop.app"
    else:
        src = pyi_dist / name
        dest = DIST / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(src), str(dest))
    return dest


def strip_libraries(folder: Path) -> int:
    """strip --strip-unneeded the STRIP_PATTERNS files under folder/_internal; return bytes saved."""
    import re

    strip = shutil.which("strip")
    internal = folder / "_internal"
    if strip is None or not internal.is_dir():
        return 0
    rx = re.compile("|".join(f"(?:{p})" for p in STRIP_PATTERNS))
    saved = 0
    for dirpath, _dirs, files in os.walk(internal):
        for name in files:
            p = Path(dirpath) / name
            rel = p.relative_to(internal).as_posix()
            if p.is_symlink() or not rx.search(rel):
                continue
            before = p.stat().st_size
            subprocess.run([strip, "--strip-unneeded", str(p)], check=True)
            saved += before - p.stat().st_size
    return saved


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def make_tarball(folder: Path, level: int) -> Path:
    """folder.tar.gz next to the folder (gzip: every Linux can open it)."""
    out = folder.parent / f"{folder.name}.tar.gz"
    tmp = out.with_suffix(".gz.part")
    with tarfile.open(tmp, "w:gz", compresslevel=level) as tar:
        tar.add(folder, arcname=folder.name)
    tmp.replace(out)
    return out


def icon_files() -> tuple[Path | None, dict[int, Path]]:
    """(svg, {size: png}) from resources/icons."""
    icons = ROOT / "resources" / "icons"
    svg = icons / f"{APP}.svg"
    pngs = {}
    for p in icons.glob(f"{APP}-*.png"):
        try:
            pngs[int(p.stem.rsplit("-", 1)[1])] = p
        except ValueError:
            pass
    return (svg if svg.exists() else None), pngs


def deb_control(version: str, installed_kb: int) -> str:
    return "\n".join([
        f"Package: {APP}",
        f"Version: {version}",
        "Section: science",
        "Priority: optional",
        f"Architecture: {deb_arch()}",
        f"Installed-Size: {installed_kb}",
        # The system libraries the bundle links (readelf NEEDED of every bundled ELF file, minus what it carries).
        "Depends: libc6, libstdc++6, libgcc-s1, libgl1, libegl1, libfontconfig1, libfreetype6, "
        "libglib2.0-0 | libglib2.0-0t64, libdbus-1-3, libzstd1, libx11-6, libx11-xcb1, libxcb1, libxcb-glx0, "
        "libxcb-randr0, libxcb-render0, libxcb-shape0, libxcb-shm0, libxcb-sync1, libxcb-xfixes0, libxcb-icccm4, "
        "libxcb-keysyms1, libxcb-cursor0, libxkbcommon0, libxkbcommon-x11-0",
        # Qt's Wayland platform plugin; without them Qt falls back to X11 (XWayland).
        "Recommends: libwayland-client0, libwayland-cursor0, libwayland-egl1",
        "Maintainer: hitl-desktop maintainers <hitl-desktop@localhost>",
        "Description: Human-in-the-loop review of ML training data",
        " Review machine-learning training data in batches: the machine flags suspicious values",
        " and likely label errors, a person corrects them and approves or rejects each batch",
        " with an electronic signature. Works offline. Installs to /opt/hitl-desktop, with the",
        " hitl-desktop window and the hitl command on the PATH.",
        "",
    ])


def make_deb(folder: Path, version: str, compression: str, level: int) -> Path | None:
    if shutil.which("dpkg-deb") is None:
        print("note: dpkg-deb not found; skipping the .deb", flush=True)
        return None
    root = BUILD / "deb" / f"{APP}_{version}"
    if root.exists():
        shutil.rmtree(root)
    opt = root / INSTALL_DIR.lstrip("/")
    shutil.copytree(folder, opt, symlinks=True)
    bindir = root / "usr" / "bin"
    bindir.mkdir(parents=True)
    for exe in ("hitl", APP):
        os.symlink(f"{INSTALL_DIR}/{exe}", bindir / exe)  # the bootloader resolves the link to find _internal/
    apps = root / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    shutil.copy2(PACKAGING / "linux" / f"{APP}.desktop", apps / f"{APP}.desktop")
    svg, pngs = icon_files()
    hicolor = root / "usr" / "share" / "icons" / "hicolor"
    for size, png in sorted(pngs.items()):
        d = hicolor / f"{size}x{size}" / "apps"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, d / f"{APP}.png")
    if svg:
        d = hicolor / "scalable" / "apps"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy2(svg, d / f"{APP}.svg")
    if not pngs and not svg:
        print("warning: no icons in resources/icons; the menu entry will have none", flush=True)
    debian = root / "DEBIAN"
    debian.mkdir()
    installed_kb = (dir_size(root) + 1023) // 1024
    (debian / "control").write_text(deb_control(version, installed_kb), encoding="utf-8")
    for dirpath, dirs, files in os.walk(root):  # dpkg wants 0755 directories, no group/other write
        os.chmod(dirpath, 0o755)
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, 0o755 if mode & 0o111 else 0o644)
    out = DIST / deb_name(version)
    cmd = ["dpkg-deb", "--root-owner-group", f"-Z{compression}", f"-z{level}", "--build", str(root), str(out)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(root)  # a full copy of the bundle
    return out


def make_windows_installer(version: str) -> Path | None:
    iscc = shutil.which("iscc") or shutil.which("ISCC")
    if iscc is None:
        print("note: Inno Setup (iscc) not on PATH; folder only. See packaging/README.md", flush=True)
        return None
    iss = PACKAGING / "windows" / "hitl-desktop.iss"
    cmd = [iscc, f"/DAppVersion={version}", f"/DSourceDir={DIST / bundle_name(version)}", f"/O{DIST}"]
    _svg, pngs = icon_files()
    if pngs:
        from PIL import Image  # Pillow comes with matplotlib

        ico = BUILD / f"{APP}.ico"
        Image.open(pngs[max(pngs)]).save(ico, sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
        cmd.append(f"/DIconFile={ico}")
    cmd.append(str(iss))
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return DIST / f"{APP}-{version}-setup.exe"


def make_dmg(version: str) -> Path | None:
    if shutil.which("hdiutil") is None:
        return None
    out = DIST / f"{APP}-{version}-{platform_tag()}.dmg"
    subprocess.run(["sh", str(PACKAGING / "macos" / "make_dmg.sh"), str(DIST / "HITL Desktop.app"), str(out),
                    version], check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    global BUILD, DIST
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clean", action="store_true", help="clear PyInstaller's cache first")
    ap.add_argument("--no-installer", action="store_true", help="folder only: no archive, .deb, setup.exe or dmg")
    ap.add_argument("--fast", action="store_true", help="quick compression (tests); releases use the default")
    ap.add_argument("--build-dir", type=Path, default=BUILD, help=f"work files (default {BUILD.relative_to(ROOT)})")
    ap.add_argument("--dist-dir", type=Path, default=DIST, help=f"results (default {DIST.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    BUILD, DIST = args.build_dir.resolve(), args.dist_dir.resolve()

    t0 = time.monotonic()
    version = read_version()
    if write_version_fallback(version):
        print(f"wrote hitl_desktop/_version_fallback.py ({version}); commit it", flush=True)
    stage = stage_sources(version, BUILD / "stage")
    folder = run_pyinstaller(version, stage, args.clean)
    if sys.platform.startswith("linux"):
        print(f"stripped {strip_libraries(folder) / 1e6:.0f} MB of debug symbols", flush=True)
    print(f"bundle: {folder} ({dir_size(folder) / 1e6:.0f} MB unpacked; target < 200 MB)", flush=True)
    outputs: list[Path | None] = []
    if not args.no_installer:
        if sys.platform.startswith("linux"):
            outputs.append(make_tarball(folder, 1 if args.fast else 6))
            outputs.append(make_deb(folder, version, "gzip" if args.fast else "xz", 1 if args.fast else 6))
        elif sys.platform == "win32":
            outputs.append(make_windows_installer(version))
        elif sys.platform == "darwin":
            outputs.append(make_dmg(version))
    for out in outputs:
        if out is not None:
            print(f"built: {out} ({out.stat().st_size / 1e6:.0f} MB)", flush=True)
    print(f"hitl-desktop {version} built in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
