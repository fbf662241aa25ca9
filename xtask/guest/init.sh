#!/bin/busybox sh
# /init of the vfio-rs guest test initramfs, built by `cargo xtask vm` (xtask/src/vm/initramfs.rs).
#
# The host reads this script's console output: every program run is framed by
#   @@VFIO-BEGIN <kind> <name>   ...   @@VFIO-END <kind> <name> rc=<exit code>
# (kind = test | example), a failing run is followed by the kernel log tail between
# @@VFIO-DMESG-BEGIN / @@VFIO-DMESG-END, and the last line is @@VFIO-DONE.
#
# VFIO_TEST_VARIANT and VFIO_TEST_IOMMU arrive from the kernel command line (the kernel hands
# unknown `key=value` parameters to init as environment variables).

/bin/busybox mkdir -p /bin /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
export HOME=/root
export RUST_BACKTRACE=1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# CONFIG_DEVTMPFS_MOUNT does not apply to an initramfs: mount /dev ourselves.
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/hugepages
mount -t hugetlbfs hugetlbfs /dev/hugepages
# 2 MiB pages for the DMA tests; not fatal if the kernel refuses.
{ echo 16 > /proc/sys/vm/nr_hugepages; } 2>/dev/null

# A modular kernel (the packaged Debian one) comes with /lib/modules/load.list, the modules to
# load in order, dependencies first (xtask/src/vm/packaged_kernel.rs). Loaded by insmod, a module
# does not see its `module.param=value` options on the kernel command line, so they are passed
# to insmod here, as modprobe would. Kernels with everything built in have no list.
if [ -f /lib/modules/load.list ]; then
    cmdline=$(cat /proc/cmdline)
    while read -r mod; do
        [ -n "$mod" ] || continue
        params=
        for arg in $cmdline; do
            case "$arg" in "$mod".*=*) params="$params ${arg#"$mod".}" ;; esac
        done
        # $params is split on purpose: one argument per option.
        # shellcheck disable=SC2086
        insmod "/lib/modules/$mod.ko" $params || echo "@@VFIO-INFO insmod $mod$params failed"
    done < /lib/modules/load.list
    echo "@@VFIO-INFO modules loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
fi

# Hand a PCI device to vfio-pci: unbind it from whatever driver has it, then let
# driver_override steer the next probe to vfio-pci.
bind_vfio() {
    dev=/sys/bus/pci/devices/$1
    if [ -e "$dev/driver" ]; then
        echo "$1" > "$dev/driver/unbind"
    fi
    echo vfio-pci > "$dev/driver_override"
    echo "$1" > /sys/bus/pci/drivers_probe
}

VFIO_TEST_EDU=
VFIO_TEST_EDU_RESET=
VFIO_TEST_EDU_NONVIABLE=
VFIO_TEST_NVME=
VFIO_TEST_NVME_HOTRESET=
VFIO_TEST_TESTDEV=
VFIO_TEST_VIRTIO=
VFIO_TEST_NVME_CMB=
VFIO_TEST_NVME_SRIOV=
for dev in /sys/bus/pci/devices/*; do
    [ -e "$dev/vendor" ] || continue
    bdf=${dev##*/}
    case "$(cat "$dev/vendor"):$(cat "$dev/device")" in
    0x1234:0x11e8)
        # The edu on the root bus is the test device; one alone behind a PCIe root port
        # (1b36:000c) can be reset (a bus reset); one behind the PCIe-to-PCI bridge shares
        # its IOMMU group with a virtio device: the non-viable-group case.
        parent=$(readlink -f "$dev")
        parent=${parent%/*}
        case "$parent" in
        */pci0000:00)
            [ -z "$VFIO_TEST_EDU" ] || continue
            VFIO_TEST_EDU=$bdf
            ;;
        *)
            parent=${parent##*/}
            if [ "$(cat "/sys/bus/pci/devices/$parent/device")" = 0x000c ]; then
                [ -z "$VFIO_TEST_EDU_RESET" ] || continue
                VFIO_TEST_EDU_RESET=$bdf
            else
                [ -z "$VFIO_TEST_EDU_NONVIABLE" ] || continue
                VFIO_TEST_EDU_NONVIABLE=$bdf
            fi
            ;;
        esac
        ;;
    0x1b36:0x0010)
        # The nvme with a controller memory buffer (BAR2, the third line of `resource`, is
        # set) is the peer-to-peer target; the other one on the root bus is the test device;
        # one behind a PCIe root port (1b36:000c) is the hot-reset case.
        if [ "$(sed -n 3p "$dev/resource" | cut -d' ' -f1)" != 0x0000000000000000 ]; then
            [ -z "$VFIO_TEST_NVME_CMB" ] || continue
            VFIO_TEST_NVME_CMB=$bdf
            bind_vfio "$bdf"
            continue
        fi
        parent=$(readlink -f "$dev")
        parent=${parent%/*}
        parent=${parent##*/}
        if [ -e "/sys/bus/pci/devices/$parent/device" ] &&
            [ "$(cat "/sys/bus/pci/devices/$parent/device")" = 0x000c ]; then
            [ -z "$VFIO_TEST_NVME_HOTRESET" ] || continue
            VFIO_TEST_NVME_HOTRESET=$bdf
        else
            [ -z "$VFIO_TEST_NVME" ] || continue
            VFIO_TEST_NVME=$bdf
        fi
        ;;
    0x1af4:0x1005 | 0x1af4:0x1044)
        # virtio-rng: the one on the root bus goes to vfio-pci (vendor capabilities); the one
        # behind the bridge keeps virtio-pci (it makes the non-viable group).
        parent=$(readlink -f "$dev")
        parent=${parent%/*}
        case "$parent" in */pci0000:00) ;; *) continue ;; esac
        [ -z "$VFIO_TEST_VIRTIO" ] || continue
        VFIO_TEST_VIRTIO=$bdf
        ;;
    0x8086:0x5845)
        # The SR-IOV PF (QEMU nvme with use-intel-id=on); its VFs come and go with the tests.
        [ -e "$dev/sriov_totalvfs" ] || continue
        [ -z "$VFIO_TEST_NVME_SRIOV" ] || continue
        VFIO_TEST_NVME_SRIOV=$bdf
        ;;
    0x1b36:0x0005)
        # pci-testdev: an I/O-port BAR.
        [ -z "$VFIO_TEST_TESTDEV" ] || continue
        VFIO_TEST_TESTDEV=$bdf
        ;;
    *) continue ;;
    esac
    bind_vfio "$bdf"
done
# The device-agnostic suite (tests/tests/any_device.rs) runs on every function now on vfio-pci
# whose IOMMU group is viable: each member on vfio-pci, on pcieport (a bridge) or on no driver.
VFIO_TEST_DEVICE=
for dev in /sys/bus/pci/drivers/vfio-pci/0000:*; do
    [ -e "$dev" ] || continue
    bdf=${dev##*/}
    viable=1
    for member in "/sys/bus/pci/devices/$bdf/iommu_group/devices/"*; do
        [ -e "$member/driver" ] || continue
        case "$(readlink "$member/driver")" in */vfio-pci | */pcieport) ;; *) viable= ;; esac
    done
    [ -n "$viable" ] && VFIO_TEST_DEVICE="${VFIO_TEST_DEVICE:+$VFIO_TEST_DEVICE,}$bdf"
done
export VFIO_TEST_DEVICE
export VFIO_TEST_EDU VFIO_TEST_EDU_RESET VFIO_TEST_EDU_NONVIABLE VFIO_TEST_NVME VFIO_TEST_NVME_HOTRESET VFIO_TEST_TESTDEV VFIO_TEST_VIRTIO VFIO_TEST_NVME_CMB VFIO_TEST_NVME_SRIOV
export VFIO_TEST_IOMMU="${VFIO_TEST_IOMMU:-none}"
export VFIO_TEST_VARIANT="${VFIO_TEST_VARIANT:-?}"

echo "@@VFIO-INFO variant=$VFIO_TEST_VARIANT iommu=$VFIO_TEST_IOMMU edu=$VFIO_TEST_EDU nvme=$VFIO_TEST_NVME kernel=$(uname -r)"
echo "@@VFIO-INFO any_device=$VFIO_TEST_DEVICE"
for bdf in $VFIO_TEST_EDU $VFIO_TEST_EDU_RESET $VFIO_TEST_EDU_NONVIABLE $VFIO_TEST_NVME $VFIO_TEST_NVME_HOTRESET $VFIO_TEST_TESTDEV $VFIO_TEST_VIRTIO $VFIO_TEST_NVME_CMB $VFIO_TEST_NVME_SRIOV; do
    drv=$(readlink "/sys/bus/pci/devices/$bdf/driver")
    echo "@@VFIO-INFO $bdf driver=${drv##*/} iommu_group=$(readlink "/sys/bus/pci/devices/$bdf/iommu_group" | sed 's|.*/||')"
done
# Kept on purpose: which VFIO/iommufd device nodes exist is the first thing to check.
ls -l /dev/vfio /dev/vfio/devices /dev/iommu 2>&1

# run KIND NAME COMMAND...: run one program with its output on the console, framed by markers.
run() {
    kind=$1
    name=$2
    shift 2
    echo "@@VFIO-BEGIN $kind $name"
    cd /tmp
    "$@" < /dev/null 2>&1
    rc=$?
    cd /
    echo "@@VFIO-END $kind $name rc=$rc"
    # 77: an example skipped (the kernel lacks the mode it was asked for); nothing to debug.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
        echo "@@VFIO-DMESG-BEGIN"
        dmesg | tail -40
        echo "@@VFIO-DMESG-END"
    fi
}

for t in /tests/*; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    run test "${t##*/}" "$t"
done

# /examples/run.list: one run per line, `NAME ARGS...`.
if [ -f /examples/run.list ]; then
    while read -r name args; do
        [ -n "$name" ] || continue
        # $args is split on purpose: it holds the example's arguments.
        # shellcheck disable=SC2086
        run example "$name${args:+ $args}" "/examples/$name" $args
    done < /examples/run.list
fi

echo "@@VFIO-DONE"
poweroff -f
