// The FireLink lean board's MicroPython: ESP32_GENERIC (ESP32-WROOM-32, no PSRAM) with ROMFS, so
// that the application's .mpy files run from flash instead of the heap (docs/memory.md).
// Build: make -C ports/esp32 BOARD_DIR=<this directory> (hardware/README.md, "The lean board's
// MicroPython image").

// sys.implementation._machine is "<BOARD_NAME> with <MCU_NAME>": firelink flash --board lean checks it.
#define MICROPY_HW_BOARD_NAME "FireLink lean (ESP32_GENERIC with ROMFS)"
#define MICROPY_HW_MCU_NAME "ESP32"

// vfs.VfsRom and vfs.rom_ioctl over the partition labelled "romfs" (ports/esp32/esp32_partition.c),
// mounted at /rom at start-up. Off in every stock ESP32 board (py/mpconfig.h defaults it to 0).
#define MICROPY_VFS_ROM (1)
