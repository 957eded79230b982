"""Small files on the device's filesystem, replaced atomically."""
import os


def read_bytes(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_atomic(path, data):
    """Writes to a temporary file then renames it over `path`, so a power cut leaves
    either the old or the new content, never a mix (littlefs and POSIX rename are atomic)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT (and some old VFS) will not rename over an existing file.
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def ensure_dir(path):
    if path and not exists(path):
        os.mkdir(path)
