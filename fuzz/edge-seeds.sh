#!/usr/bin/env bash
# Writes the hand-made seeds, corpus/<target>/edge-*: layouts the QEMU guest's devices never
# produce (sparse mmap areas, region types, device capabilities, hot-reset entries, extended
# capability chains) and broken ones (loops, offsets into the fixed part, counts past the end).
# Native byte order is little-endian (x86_64). Rerunning rewrites the same bytes.
#
# usage: fuzz/edge-seeds.sh [CORPUS_DIR]   (defaults to fuzz/corpus)
set -euo pipefail

corpus=${1:-$(dirname "$0")/corpus}
command -v xxd >/dev/null || { echo "$0: needs xxd" >&2; exit 1; }

# Little-endian hex of a number.
le() { # BYTES VALUE
    local hex
    hex=$(printf "%0$(($1 * 2))x" "$2")
    local out=""
    for ((i = ${#hex} - 2; i >= 0; i -= 2)); do out+=${hex:i:2}; done
    printf '%s' "$out"
}
le16() { le 2 "$1"; }
le32() { le 4 "$1"; }
le64() { le 8 "$1"; }

# A vfio_info_cap_header: id (u16), version (u16), next (u32).
cap() { printf '%s' "$(le16 "$1")$(le16 "$2")$(le32 "$3")"; }

seed() { # TARGET NAME HEX...
    local target=$1 name=$2
    shift 2
    mkdir -p "$corpus/$target"
    printf '%s' "$*" | tr -d ' ' | xxd -r -p > "$corpus/$target/edge-$name"
    echo "$target/edge-$name ($(wc -c < "$corpus/$target/edge-$name") bytes)"
}

# --- region_caps: vfio_region_info = argsz, flags, index, cap_offset (u32), size, offset (u64).
# flags: READ 1, WRITE 2, MMAP 4, CAPS 8. Regions live at index << 40 in the device fd.
seed region_caps sparse-msix-hole \
    "$(le32 80) $(le32 0xf) $(le32 0) $(le32 32) $(le64 0x4000) $(le64 0)" \
    "$(cap 1 1 0) $(le32 2) $(le32 0) $(le64 0) $(le64 0x1000) $(le64 0x3000) $(le64 0x1000)"
seed region_caps type-then-msix-mappable \
    "$(le32 56) $(le32 0xb) $(le32 9) $(le32 32) $(le64 0x1000) $(le64 $((9 << 40)))" \
    "$(cap 2 1 48) $(le32 1) $(le32 1) $(cap 3 1 0)"
seed region_caps unknown-cap-then-sparse \
    "$(le32 80) $(le32 0xf) $(le32 2) $(le32 32) $(le64 0x10000) $(le64 $((2 << 40)))" \
    "$(cap 0x55 2 48) $(le64 0x1122334455667788)" \
    "$(cap 1 1 0) $(le32 1) $(le32 0) $(le64 0x2000) $(le64 0xe000)"
seed region_caps cap-loop \
    "$(le32 48) $(le32 0xf) $(le32 0) $(le32 32) $(le64 0x1000) $(le64 0)" \
    "$(cap 3 1 40) $(cap 3 1 32)"
seed region_caps sparse-count-past-the-end \
    "$(le32 64) $(le32 0xf) $(le32 0) $(le32 32) $(le64 0x1000) $(le64 0)" \
    "$(cap 1 1 0) $(le32 0xffffffff) $(le32 0) $(le64 0) $(le64 0x1000)"
seed region_caps cap-offset-in-fixed-part \
    "$(le32 40) $(le32 0xf) $(le32 0) $(le32 16) $(le64 0x1000) $(le64 0) $(cap 3 1 0)"
# Two the fuzzer found (now Malformed): a region running past the last fd offset, and a sparse
# area outside its region.
seed region_caps region-past-the-last-offset \
    "$(le32 32) $(le32 0x7) $(le32 0) $(le32 0) $(le64 0xffffff26ffffffff) $(le64 $((1 << 44)))"
seed region_caps sparse-area-outside-the-region \
    "$(le32 64) $(le32 0xf) $(le32 0) $(le32 32) $(le64 0x4000) $(le64 0)" \
    "$(cap 1 1 0) $(le32 1) $(le32 0) $(le64 0x3000) $(le64 0x2000)"

# --- device_info_caps: vfio_device_info = argsz, flags, num_regions, num_irqs, cap_offset, pad.
# flags: PCI 2, CAPS 0x80. Capabilities: zPCI base 1, PCI atomic completer 5.
seed device_info_caps pci-atomic-comp \
    "$(le32 40) $(le32 0x82) $(le32 9) $(le32 5) $(le32 24) $(le32 0)" \
    "$(cap 5 1 0) $(le32 0x7) $(le32 0)"
seed device_info_caps zpci-base-then-atomic \
    "$(le32 88) $(le32 0x82) $(le32 9) $(le32 5) $(le32 24) $(le32 0)" \
    "$(cap 1 2 72) $(le64 0x80000000) $(le64 0x100000000) $(le64 0x7fffffff) $(le64 0x12) $(le64 0)" \
    "$(cap 5 1 0) $(le32 0x3) $(le32 0)"
seed device_info_caps cap-loop \
    "$(le32 48) $(le32 0x82) $(le32 9) $(le32 5) $(le32 24) $(le32 0)" \
    "$(cap 5 1 24) $(le32 1) $(le32 0) $(le64 0)"

# --- iommu_info: vfio_iommu_type1_info = argsz, flags (u32), iova_pgsizes (u64), cap_offset,
# pad (u32). flags: PGSIZES 1, CAPS 2. Capabilities: IOVA ranges 1, migration 2, DMA avail 3.
seed iommu_info two-iova-ranges \
    "$(le32 72) $(le32 3) $(le64 0x1000) $(le32 24) $(le32 0)" \
    "$(cap 1 1 0) $(le32 2) $(le32 0) $(le64 0) $(le64 0xfedfffff) $(le64 0xfef00000) $(le64 0xffffffffffffffff)"
# The fuzzer found that overlapping ranges made the IOVA allocator hand out an IOVA twice.
seed iommu_info overlapping-iova-ranges \
    "$(le32 72) $(le32 3) $(le64 0x1000) $(le32 24) $(le32 0)" \
    "$(cap 1 1 0) $(le32 2) $(le32 0) $(le64 0x200000) $(le64 0x3fffff) $(le64 0x1000) $(le64 0x100001fffff)"
seed iommu_info no-caps \
    "$(le32 24) $(le32 1) $(le64 0xfffffffffffff000) $(le32 0) $(le32 0)"
seed iommu_info range-count-past-the-end \
    "$(le32 56) $(le32 3) $(le64 0x1000) $(le32 24) $(le32 0)" \
    "$(cap 1 1 0) $(le32 0x10000000) $(le32 0) $(le64 0) $(le64 0xffffffff)"

# --- hot_reset_info: argsz, flags, count (u32), then count x vfio_pci_dependent_device =
# group_id or devid (u32), segment (u16), bus (u8), devfn (u8). flags: DEV_ID 1, DEV_ID_OWNED 2.
seed hot_reset_info group-two-functions \
    "$(le32 28) $(le32 0) $(le32 2)" \
    "$(le32 5) $(le16 0) 01 00" \
    "$(le32 5) $(le16 0) 01 01"
seed hot_reset_info cdev-all-owned \
    "$(le32 28) $(le32 3) $(le32 2)" \
    "$(le32 1) $(le16 0) 02 00" \
    "$(le32 2) $(le16 1) 02 $(printf '%02x' $(((3 << 3) | 7)))"
seed hot_reset_info cdev-not-owned \
    "$(le32 28) $(le32 1) $(le32 2)" \
    "$(le32 0) $(le16 0) 03 00" \
    "$(le32 0xffffffff) $(le16 0) 03 08"
seed hot_reset_info count-past-the-end \
    "$(le32 20) $(le32 0) $(le32 1000)" \
    "$(le32 7) $(le16 0) 05 00"

# --- pci_capabilities: config-space images. Standard list: pointer at 0x34 (needs status bit 4
# at 0x06), entries `id, next`. Extended list from 0x100: header = id | version << 16 | next << 20.
config() { # FILE SIZE: a zeroed image
    head -c $(($2)) /dev/zero > "$1"
}
put() { # FILE OFFSET HEX
    printf '%s' "$3" | tr -d ' ' | xxd -r -p | dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none
}
ext() { # ID VERSION NEXT: an extended capability header
    le32 $(($1 | ($2 << 16) | ($3 << 20)))
}
image() { # NAME: move the image into the corpus
    mkdir -p "$corpus/pci_capabilities"
    mv "$tmp" "$corpus/pci_capabilities/edge-$1"
    echo "pci_capabilities/edge-$1 ($(wc -c < "$corpus/pci_capabilities/edge-$1") bytes)"
}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

# PCIe endpoint: PM -> MSI -> PCIe -> MSI-X (a reserved low bit in one pointer), then AER -> DSN
# -> LTR in the extended space.
config "$tmp" 4096
put "$tmp" 0x00 "$(le16 0x1b36)$(le16 0x0010)"
put "$tmp" 0x06 "$(le16 0x0010)"
put "$tmp" 0x34 40
put "$tmp" 0x40 "01 50 $(le16 0x0003) $(le16 0x0008)"
put "$tmp" 0x50 "05 71 $(le16 0x0080)"
put "$tmp" 0x70 "10 b0 $(le16 0x0002) $(le32 0x10008000)"
put "$tmp" 0xb0 "11 00 $(le16 0x0040) $(le32 0x2000) $(le32 0x3000)"
put "$tmp" 0x100 "$(ext 0x0001 2 0x148)"
put "$tmp" 0x148 "$(ext 0x0003 1 0x158) $(le64 0x0123456789abcdef)"
put "$tmp" 0x158 "$(ext 0x0018 1 0)"
image pcie-ext-chain

# Standard list pointing at itself.
config "$tmp" 256
put "$tmp" 0x06 "$(le16 0x0010)"
put "$tmp" 0x34 40
put "$tmp" 0x40 "05 40"
image std-loop

# Extended list: 0x100 -> 0x200 -> 0x100.
config "$tmp" 4096
put "$tmp" 0x100 "$(ext 0x0001 1 0x200)"
put "$tmp" 0x200 "$(ext 0x000b 1 0x100)"
image ext-loop

# Standard pointer into the header, and an extended pointer below 0x100.
config "$tmp" 4096
put "$tmp" 0x06 "$(le16 0x0010)"
put "$tmp" 0x34 10
put "$tmp" 0x100 "$(ext 0x0001 1 0x40)"
image pointers-into-the-header

# The extended list runs off a truncated image.
config "$tmp" 0x180
put "$tmp" 0x100 "$(ext 0x0001 1 0x17c)"
put "$tmp" 0x17c "$(ext 0x0002 1 0x200)"
image ext-past-the-end
