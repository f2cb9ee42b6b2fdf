"""Start-up benchmarks: the `hitl` CLI (default), or the built Linux bundle's GUI (--bundle).

    python bench/bench_startup.py [--runs 15]              # CLI process times, one run, baselines from the same run
    /work/venv/bin/python bench/bench_startup.py --bundle [--runs 5] [--build]

CLI (default): median wall time of whole processes (spawn to exit), runs interleaved so load on a shared machine
hits every command alike:

* `hitl --version` vs `python -c pass` (target ratio <= 4x);
* `hitl batches DIR --json` on a 2,000-batch project vs `python -c "import pandas"` (target <= 0.75x);
* `hitl show DIR BATCH --json` vs the same `import pandas` baseline (target <= 0.75x).

The project (2,000 batches of 25 rows x 20 columns) is built once in a temporary folder, unmeasured.

Bundle (--bundle): launch to a painted main window on the demo project (offscreen).
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


def _packaging_build():
    """packaging/build.py, loaded by path (`build` is also a PyPI package's name); only the bundle mode needs it."""
    spec = _ilu.spec_from_file_location("hitl_packaging_build", ROOT / "packaging" / "build.py")
    hb = _ilu.module_from_spec(spec)
    sys.modules["hitl_packaging_build"] = hb
    spec.loader.exec_module(hb)
    return hb


START_TARGET_S = 2.0
SIZE_TARGET_MB = 200
VERSION_TARGET_X = 4.0
COMMAND_TARGET_X = 0.75
N_BATCHES = 2000
BATCH_ROWS = 25


# --- CLI --------------------------------------------------------------------------------------------------------


def _hitl() -> list[str]:
    exe = Path(sys.executable).with_name("hitl")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hitl_desktop.cli.main"]


def _make_project(folder: Path) -> int:
    """A project of N_BATCHES batches; returns a batch id to show."""
    sys.path.insert(0, str(Path(__file__).parent))
    from datagen import write_csv

    from hitl_desktop.core import batches as B
    from hitl_desktop.core.ingest import ImportOptions
    from hitl_desktop.core.project import Project
    from hitl_desktop.core.sources import import_file

    csv = folder / "data.csv"
    write_csv(csv, N_BATCHES * BATCH_ROWS)
    project = Project.init(folder / "proj", user="bench")
    import_file(project, csv, ImportOptions(label="label", batch_size=BATCH_ROWS), user="bench")
    bs = B.list_batches(project, None)
    project.close()
    if len(bs) != N_BATCHES:
        raise SystemExit(f"expected {N_BATCHES} batches, got {len(bs)}")
    return bs[len(bs) // 2].id


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return dt


def cli_main(runs: int) -> int:
    hitl = _hitl()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    with tempfile.TemporaryDirectory(prefix="hitl-bench-cli-") as tmp:
        t = time.perf_counter()
        batch = _make_project(Path(tmp))
        print(f"project: {N_BATCHES} batches x {BATCH_ROWS} rows x 20 cols, built in {time.perf_counter() - t:.1f} s "
              "(not counted)")
        proj = str(Path(tmp) / "proj")
        cmds = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import pandas'": [sys.executable, "-c", "import pandas"],
            "hitl --version": hitl + ["--version"],
            "hitl batches DIR --json": hitl + ["batches", proj, "--json"],
            f"hitl show DIR {batch} --json": hitl + ["show", proj, str(batch), "--json"],
        }
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for k, c in cmds.items():  # warm-up: page cache, .pyc files
            _time(c, env)
        for _ in range(runs):
            for k, c in cmds.items():
                times[k].append(_time(c, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"CLI process times, median of {runs} interleaved runs ({' '.join(hitl)}):")
    for k, v in med.items():
        print(f"  {k:<34} {v * 1000:7.0f} ms  (min {min(times[k]) * 1000:.0f}, max {max(times[k]) * 1000:.0f})")
    base_pass, base_pd = med["python -c pass"], med["python -c 'import pandas'"]

    def verdict(ratio: float, target: float) -> str:
        return "OK" if ratio <= target else "OVER TARGET"

    r = med["hitl --version"] / base_pass
    print(f"hitl --version / python -c pass: {r:.2f}x (target <= {VERSION_TARGET_X:g}x) {verdict(r, VERSION_TARGET_X)}")
    for k in list(cmds)[3:]:
        r = med[k] / base_pd
        print(f"{k} / python -c 'import pandas': {r:.2f}x (target <= {COMMAND_TARGET_X:g}x) "
              f"{verdict(r, COMMAND_TARGET_X)}")
    return 0


# --- bundle -----------------------------------------------------------------------------------------------------


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
    ap.add_argument("--runs", type=int, help="runs per figure (default 15 for the CLI, 5 for the bundle)")
    ap.add_argument("--bundle", action="store_true", help="measure the built GUI bundle instead of the CLI")
    ap.add_argument("--build", action="store_true", help="with --bundle: rebuild the bundle first")
    args = ap.parse_args()
    if not args.bundle:
        return cli_main(args.runs or 15)
    args.runs = args.runs or 5
    hb = _packaging_build()
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
