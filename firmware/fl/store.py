"""Small files on the device's filesystem, replaced atomically, and the count of flash block
writes every firmware write costs.

The count models littlefs on SPI NOR (the ESP32 default): a write into a file rewrites at
least the 4 KB block it touches (copy-on-write), and a rename or remove commits the directory's
metadata block. Every firmware write to flash goes through `charge()`, so `block_writes` is the
firmware's own figure on any board. On the simulated board `stall_ms` is set (fl/hal/sim.py)
and each block write also blocks the interpreter that long, as a real flash erase stalls the
ESP32's CPU (its code runs from the same chip).
"""
import os
import time

BLOCK = 4096
block_writes = 0  # since boot
stall_ms = 0  # per block write; the simulated board sets it


def charge(blocks=1):
    """Counts block rewrites (and stalls for them on the simulated board)."""
    global block_writes
    block_writes += blocks
    if stall_ms:
        time.sleep_ms(stall_ms * blocks)


def blocks_for(nbytes):
    return max(1, (nbytes + BLOCK - 1) // BLOCK)


def read_bytes(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_atomic(path, data):
    """Writes to a temporary file then renames it over `path`, so a power cut leaves
    either the old or the new content, never a mix (littlefs and POSIX rename are atomic).
    Costs a block for the data and one for the rename's metadata commit."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    charge(blocks_for(len(data)))
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT (and some old VFS) will not rename over an existing file.
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)
    charge()


def write_whole(path, data):
    """Replaces a file's content in one write (one block for a small file): atomic on littlefs
    (a file's new content commits when it is closed), not on POSIX, so callers keep two copies
    and check what they read (fl/reported.py)."""
    with open(path, "wb") as f:
        if f.write(data) != len(data):
            raise OSError(28)
    charge(blocks_for(len(data)))


def remove(path):
    """Removes a file if it is there (one metadata commit); a missing file is not an error."""
    try:
        os.remove(path)
    except OSError:
        return
    charge()


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def ensure_dir(path):
    if path and not exists(path):
        os.mkdir(path)
        charge()
