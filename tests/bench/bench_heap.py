"""`make bench`, heap part: does the application as it ships fit the lean board, and where does
its heap go. Four figures, all on the shipped build with the lean board's board.json:
firelink.board.build's .mpy files for the ESP32 (bytecode only), the package fl/ in a ROMFS image
(firelink.board.romfs) that the unix port maps outside its heap and imports in place, as the lean
board's ROMFS partition is (firelink.virtual.romrun; docs/memory.md):

1. the smallest `-X heapsize` at which the alarm scenario passes (tests/hil/heapfit.py: boot,
   online, fire alarm acked, restore, three heartbeats, no MemoryError, one boot), found by
   bisection in steps of 4 KiB; each try is its own site (mosquitto, monitor, virtual device);
2. the import cost of each firmware module (heap still allocated after a collection), in
   dependency order so each figure is the module's own (tests/bench/heap_imports.py), beside
   what the same module costs imported from the filesystem (the .mpy read into RAM);
3. what the input loop allocates per scan while nothing changes (tests/bench/heap_idle.py):
   the board's wait (fl/edgewait.py) against the wait_for_ms it replaced;
4. the names MicroPython has interned once the app is built as fl/boot.py builds it, and what
   the modules the app loads later still add (tests/bench/heap_names.py; target 0: boot
   interned them, docs/memory.md "Names").

The unix port here is 64-bit: objects holding pointers are twice their ESP32 size, bytecode and
byte buffers are not (a 32-bit build of the same port needed ≈0.69 × the heap). The lean cap
(160k here) stands for the ≈110 KB a WROOM-32 keeps with Wi-Fi and TLS up.

    python -m tests.bench.bench_heap [--dir run/bench-heap] [--low 96] [--high 256]
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from firelink.board import boards, build, romfs
from firelink.virtual import device as virtual
from tests.hil import heapfit
from tests.tooling import ROOT, micropython_binary

HERE = Path(__file__).resolve().parent
FIRMWARE = ROOT / "firmware"


@dataclass
class HeapFigures:
    smallest_k: int | None = None
    runs: list[heapfit.Outcome] = field(default_factory=list)
    imports: list[tuple[str, int, int]] = field(default_factory=list)  # module, bytes, of which qstr pool
    imports_total: int = 0
    # the same modules' cost imported from littlefs (the plain .mpy build): what ROMFS saves
    imports_fs: dict[str, int] = field(default_factory=dict)
    imports_fs_total: int = 0
    romfs_bytes: int = 0
    qstr: str = ""
    names: tuple[int, int, int] | None = None  # interned once the app is built, pools, added by LATER's modules
    idle: dict[str, dict[str, int]] = field(default_factory=dict)  # label -> scans, total, garbage, sim_*
    errors: list[str] = field(default_factory=list)

    def per_scan(self, label: str, key: str) -> float | None:
        row = self.idle.get(label)
        return row[key] / row["scans"] if row and row["scans"] else None


def module_order(package: Path = FIRMWARE / "fl") -> list[str]:
    """Every fl module the app can import (the simulated board's, not the ESP32's, and not the
    modules the app never imports), dependencies first."""
    deps: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:  # import time only: not the imports inside functions
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fl"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("fl"))
        deps[name] = found
    for m in deps:  # importing fl.hal.sim imports the package fl.hal first
        if "." in m:
            deps[m].add(m.rsplit(".", 1)[0])
    deps = {m: {d for d in ds if d in deps and d != m} for m, ds in deps.items()}
    # need the ESP32's machine / network modules, or are never imported
    skip = {"fl.hal.esp32", "fl.hal.esp32_modem", "fl.contact_id"}
    order: list[str] = []

    def visit(m: str, path: tuple[str, ...] = ()) -> None:
        if m in order or m in path or m in skip:
            return
        for d in sorted(deps[m]):
            visit(d, (*path, m))
        order.append(m)

    for m in sorted(deps):
        visit(m)
    return order


def device_dir(directory: Path) -> Path:
    """A virtual device's filesystem (lean board, default config) for the MicroPython scripts."""
    virtual.create(directory, {"device_id": heapfit.DEVICE_ID}, None, board=boards.load(boards.LEAN))
    return directory


def run_script(script: str, cwd: Path, app: Path, *args: str, heapsize: str = "1m",
               extra_env: dict[str, str] | None = None) -> str:
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(app), ".frozen"]), **(extra_env or {}))
    image = romfs.rom_image_of(app)
    if image is None:
        argv = [micropython_binary(), "-X", f"heapsize={heapsize}", str(HERE / script), *args]
    else:  # a ROM build: fl/ mapped and mounted at /rom as on the board (firelink.virtual.romrun)
        argv = [sys.executable, "-m", "firelink.virtual.romrun", str(image), "run", "-X", f"heapsize={heapsize}", "--",
                str(HERE / script), *args]
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{script} failed (status {r.returncode}): {(r.stdout + r.stderr).strip()[-800:]}")
    return r.stdout


def import_costs(cwd: Path, app: Path) -> tuple[str, list[tuple[str, int]]]:
    out = run_script("heap_imports.py", cwd, app, extra_env={"FL_MODULES": ",".join(["asyncio", "json", *module_order()])})
    return out, [(m.group(1), int(m.group(2))) for m in re.finditer(r"^module (\S+) (-?\d+)$", out, re.M)]


def measure_imports(figs: HeapFigures, cwd: Path, app: Path, fs_app: Path) -> None:
    """Import costs of the shipped build (`app`; a ROM build imports fl/ from /rom) and, for
    comparison, of the same .mpy files imported from the filesystem (`fs_app`)."""
    if fs_app != app:
        _, fs_rows = import_costs(cwd, fs_app)
        figs.imports_fs = dict(fs_rows)
        figs.imports_fs_total = sum(n for _, n in fs_rows)
    out, _ = import_costs(cwd, app)
    pool = 0
    for line in out.splitlines():
        m = re.match(r"^module (\S+) (-?\d+)$", line)
        if m:
            figs.imports.append((m.group(1), int(m.group(2)), 0))
        q = re.search(r"n_total_bytes=(\d+)", line)
        if q and figs.imports:
            name, n, _ = figs.imports[-1]
            figs.imports[-1] = (name, n, int(q.group(1)) - pool)
            pool = int(q.group(1))
    total = re.search(r"^total (\d+)$", out, re.M)
    figs.imports_total = int(total.group(1)) if total else 0
    pools = re.findall(r"^qstr pool: (.*)$", out, re.M)
    figs.qstr = pools[-1] if pools else ""


def measure_names(figs: HeapFigures, cwd: Path, app: Path) -> None:
    out = run_script("heap_names.py", cwd, app)
    found = re.findall(r"n_pool=(\d+), n_qstr=(\d+)", out)
    if len(found) != 2:
        raise RuntimeError(f"heap_names.py printed no name table: {out.strip()[-300:]}")
    (pools, boot), (_, later) = ((int(a), int(b)) for a, b in found)
    figs.names = (boot, pools, later - boot)


def measure_idle(figs: HeapFigures, cwd: Path, app: Path, window_ms: int = 3000) -> None:
    out = run_script("heap_idle.py", cwd, app, str(window_ms))
    for m in re.finditer(r"^(\S+) scans (\d+) total (-?\d+) garbage (-?\d+) sim_total (\d+) sim_garbage (\d+)$",
                         out, re.M):
        figs.idle[m.group(1)] = {"scans": int(m.group(2)), "total": int(m.group(3)), "garbage": int(m.group(4)),
                                 "sim_total": int(m.group(5)), "sim_garbage": int(m.group(6))}


def measure(directory: Path, low_k: int, high_k: int, console: Console) -> HeapFigures:
    figs = HeapFigures()
    with console.status("building the application (.mpy, fl/ as a ROMFS image) as it ships to the lean board"):
        fs_app = build.build_app(build.arch_for_chip("ESP32"), build_root=directory / "build")
        rom = romfs.romfs_split(fs_app)
        app = rom.littlefs.directory
        figs.romfs_bytes = rom.image_bytes
    try:
        with console.status("import cost per module"):
            measure_imports(figs, device_dir(directory / "imports"), app, fs_app.directory)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        figs.errors.append(f"import costs: {e}")
    try:
        with console.status("names interned at boot"):
            measure_names(figs, device_dir(directory / "names"), app)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        figs.errors.append(f"names: {e}")
    try:
        with console.status("idle allocation per input scan"):
            measure_idle(figs, device_dir(directory / "idle"), app)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        figs.errors.append(f"idle allocation: {e}")

    def show(o: heapfit.Outcome) -> None:
        console.print(f"  -X heapsize={o.heapsize}: {'[green]fits[/]' if o.fits else '[red]does not fit[/]'} "
                      f"({o.reached}; {o.memory_errors} MemoryError, {o.boots} boots, {o.seconds:.0f} s)")

    console.print(f"smallest heap for the alarm scenario, bisection {low_k}k..{high_k}k:")
    figs.smallest_k, figs.runs = heapfit.smallest_heap(directory / "fit", app, low_k, high_k, on_run=show)
    return figs


def tables(figs: HeapFigures) -> list[Table]:
    out = []
    t = Table(title="Heap: the alarm scenario on the shipped build, lean board (unix port, 64-bit; fl/ in a "
                    f"{figs.romfs_bytes / 1024:.1f} KB ROMFS image, mapped outside the heap)",
              title_justify="left")
    t.add_column("")
    t.add_column("", justify="right")
    t.add_row("smallest passing -X heapsize (bisection, 4 KiB steps)",
              f"{figs.smallest_k}k" if figs.smallest_k else "none up to the top of the range")
    t.add_row(f"lean board cap ({heapfit.LEAN_CAP}; a WROOM-32 keeps ≈110 KB)",
              "met" if figs.smallest_k and figs.smallest_k <= heapfit.kbytes(heapfit.LEAN_CAP) // 1024 else "NOT met")
    peaks = [o.heap_peak_b for o in figs.runs if o.fits and o.heap_peak_b]
    if peaks:
        t.add_row("heap_peak reported by the heartbeats (live after a collection)", f"{max(peaks) / 1024:.1f} KB")
    if figs.names:
        boot, pools, later = figs.names
        t.add_row("names interned once the app is built (MicroPython's name table; fl/boot.py)",
                  f"{boot} in {pools} pools")
        t.add_row("names the modules loaded later add after boot (target 0)", str(later))
    out.append(t)
    if figs.imports:
        t = Table(title=f"Import cost per module, shipped build (fl/ from ROMFS), dependencies first (bytes left "
                        f"allocated after a collection; total {figs.imports_total / 1024:.1f} KB, the same .mpy files "
                        f"from the filesystem {figs.imports_fs_total / 1024:.1f} KB; qstr pool after all: {figs.qstr}). "
                        "The qstr pool grows in doubling steps, so a module that crosses one is charged the step",
                  title_justify="left")
        t.add_column("module")
        t.add_column("bytes", justify="right")
        t.add_column("of which names interned (qstr pool)", justify="right")
        t.add_column("bytes from the filesystem", justify="right")
        for m, n, q in sorted(figs.imports, key=lambda r: -r[1]):
            t.add_row(m, str(n), str(q), str(figs.imports_fs.get(m, "-")))
        out.append(t)
    if figs.idle:
        t = Table(title="Input loop while nothing changes: heap per scan (GC off during the window)",
                  title_justify="left")
        for col in ("wait", "scans", "allocated per scan", "garbage per scan", "simulator's file poll, per scan"):
            t.add_column(col, justify="left" if col == "wait" else "right")
        for label, what in (("edgewait", "fl/edgewait.py (now)"), ("wait_for_ms", "wait_for_ms on the flag (before)")):
            row = figs.idle.get(label)
            if row:
                n = max(1, row["scans"])
                t.add_row(what, str(row["scans"]), f"{row['total'] / n:.0f} B", f"{row['garbage'] / n:.0f} B",
                          f"{row['sim_total'] / n:.0f} B ({row['sim_garbage'] / n:.0f} B garbage)")
        out.append(t)
    return out


def summary_rows(figs: HeapFigures) -> list[tuple[str, str, str]]:
    """Rows for run.py's summary table."""
    rows = [("smallest heap, alarm scenario (shipped build)",
             f"{figs.smallest_k}k" if figs.smallest_k else "-",
             f"lean cap {heapfit.LEAN_CAP}: " + ("met" if figs.smallest_k and figs.smallest_k * 1024 <=
                                                heapfit.kbytes(heapfit.LEAN_CAP) else "NOT met"))]
    if figs.imports:
        top = ", ".join(f"{m.removeprefix('fl.')} {n / 1024:.1f}" for m, n, _ in sorted(figs.imports, key=lambda r: -r[1])[:4])
        rows.append(("import cost, all modules (fl/ from ROMFS)", f"{figs.imports_total / 1024:.1f} KB",
                     f"from the filesystem {figs.imports_fs_total / 1024:.1f} KB; largest (KB): {top}"))
    if figs.names:
        boot, pools, later = figs.names
        rows.append(("names interned at boot (qstr table)", str(boot),
                     f"{pools} pools; added after boot by the modules loaded later: {later} (target 0)"))
    g, g_old = figs.per_scan("edgewait", "garbage"), figs.per_scan("wait_for_ms", "garbage")
    if g is not None:
        rows.append(("idle garbage per input scan", f"{g:.0f} B",
                     "target 0" + (f"; wait_for_ms made {g_old:.0f} B" if g_old is not None else "")))
    return rows


def run_part(directory: Path, console: Console, summary: list[tuple[str, str, str]]) -> str | None:
    """run.py's hook: measures, prints, adds summary rows; returns what failed, or None."""
    try:
        figs = measure(directory, 96, 256, console)
    except (build.BuildError, OSError) as e:
        return f"heap bench: {e}"
    for t in tables(figs):
        console.print(t)
    summary.extend(summary_rows(figs))
    if figs.errors:
        return "; ".join(figs.errors)
    return None if figs.smallest_k else "the alarm scenario did not pass at any heap up to 256k"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.bench_heap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=ROOT / "run" / "bench-heap", help="(default: %(default)s)")
    p.add_argument("--low", type=int, default=96, help="KiB assumed too small (default: %(default)s)")
    p.add_argument("--high", type=int, default=256, help="KiB that must fit (default: %(default)s)")
    args = p.parse_args(argv)
    console = Console()
    t0 = time.monotonic()
    figs = measure(args.dir, args.low, args.high, console)
    for t in tables(figs):
        console.print(t)
    for e in figs.errors:
        console.print(f"[red]{e}[/]")
    console.print(f"({time.monotonic() - t0:.0f} s)")
    return 1 if figs.errors or figs.smallest_k is None else 0


if __name__ == "__main__":
    sys.exit(main())
