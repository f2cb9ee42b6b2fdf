"""Start-up benchmark of the built Linux bundle: launch to a painted main window on the demo project (offscreen).

    /work/venv/bin/python bench/bench_startup.py [--runs 5] [--build]

Uses packaging/dist/hitl-desktop-VERSION-PLATFORM/ (builds it with `packaging/build.py --no-installer` first
when missing or with --build). Each run starts `hitl-desktop --demo` under QT_QPA_PLATFORM=offscreen with HOME and
the XDG folders in a temporary directory; the frozen launcher's HITL_STARTUP_PROBE hook records the moment the
window has loaded its first batch and rendered completely (QWidget.grab), and the figure is that moment minus the
moment just before the process was spawned. The demo project is created by an unmeasured first run.

* cold: before each run every file of the bundle is evicted from the page cache (posix_fadvise DONTNEED, no root
  needed), so the program's ~400 MB are read from disk again. System libraries stay cached.
* warm: the bundle's files are cached (a second start).

Targets: cold start < 2 s; bundle size < 200 MB unpacked.
"""
from __future__ import annotations

import argparse
import getpass
import importlib.util as _ilu
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = _ilu.spec_from_file_location("hitl_packaging_build", ROOT / "packaging" / "build.py")
hb = _ilu.module_from_spec(_spec)
sys.modules["hitl_packaging_build"] = hb
_spec.loader.exec_module(hb)  # packaging/build.py, loaded by path (`build` is also a PyPI package's name)

START_TARGET_S = 2.0
SIZE_TARGET_MB = 200


def evict(folder: Path) -> None:
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def launch(exe: Path, env: dict[str, str], probe: Path, timeout: float = 120.0) -> float:
    probe.unlink(missing_ok=True)
    t0 = time.time()
    proc = subprocess.run([str(exe), "--demo", "--user", getpass.getuser()], env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not probe.exists():
        raise SystemExit(f"no paint recorded (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
    return float(probe.read_text()) - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", action="store_true", help="rebuild the bundle first")
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("this benchmark measures the Linux bundle")

    version = hb.read_version()
    folder = hb.DIST / hb.bundle_name(version)
    if args.build or not (folder / "hitl-desktop").exists():
        subprocess.run([sys.executable, str(ROOT / "packaging" / "build.py"), "--no-installer"], check=True)
    exe = folder / "hitl-desktop"
    size_mb = hb.dir_size(folder) / 1e6

    with tempfile.TemporaryDirectory(prefix="hitl-bench-startup-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QT_", "XDG_"))}
        env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local/share"), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_CACHE_HOME=str(home / ".cache"), XDG_RUNTIME_DIR=str(Path(tmp) / "run"),
                   QT_QPA_PLATFORM="offscreen", HITL_STARTUP_PROBE=str(Path(tmp) / "painted"),
                   HITL_SETTINGS_FILE=str(Path(tmp) / "settings.ini"))
        os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
        probe = Path(env["HITL_STARTUP_PROBE"])
        first = launch(exe, env, probe, timeout=300)  # creates the demo project (import + checks queued)
        print(f"first run (creates the demo project, not counted): {first:.2f} s")
        cold, warm = [], []
        for _ in range(args.runs):
            evict(folder)
            cold.append(launch(exe, env, probe))
            warm.append(launch(exe, env, probe))
    print(f"bundle: {folder}")
    print(f"bundle size: {size_mb:.0f} MB unpacked (target < {SIZE_TARGET_MB} MB) "
          f"{'OK' if size_mb < SIZE_TARGET_MB else 'OVER TARGET'}")
    print(f"start to painted main window, demo project, offscreen, {args.runs} runs each:")
    med_cold = statistics.median(cold)
    print(f"  cold (bundle evicted from page cache): median {med_cold:.2f} s "
          f"(min {min(cold):.2f}, max {max(cold):.2f}); target < {START_TARGET_S:.0f} s "
          f"{'OK' if med_cold < START_TARGET_S else 'OVER TARGET'}")
    print(f"  warm (second start): median {statistics.median(warm):.2f} s (min {min(warm):.2f}, max {max(warm):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
