# The FireLink lean board's MicroPython: ESP32_GENERIC's settings plus a partition table with a
# "romfs" partition (MicroPython's own partitions-4MiB-romfs.csv: factory app 1.8 MB, romfs 128 KB
# at 0x1E0000; the littlefs "vfs" partition is made from the rest of the flash at first boot).
include(boards/mpconfigboard_esp32_common.cmake)

list(APPEND SDKCONFIG_DEFAULTS
    boards/sdkconfig.csi
    ${MICROPY_BOARD_DIR}/sdkconfig.board
)
