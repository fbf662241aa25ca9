//! Peer-to-peer DMA (issue #17): QEMU's edu device DMAs into and out of the controller memory
//! buffer of an nvme (`VFIO_TEST_NVME_CMB`, BAR2, 2 MiB, `cmb_size_mb=2`) through the IOMMU,
//! checked byte for byte through the CMB's own BAR mapping; the dma-buf export contract, what an
//! importer sees when the exporter is reset, loses memory decode or closes, and the bad inputs.
//!
//! Routes: iommufd (cdev, the compat container, no-IOMMU cdev) imports a dma-buf of the BAR
//! (`VFIO_DEVICE_FEATURE_DMA_BUF` + `IOMMU_IOAS_MAP_FILE`); the type1 driver maps the BAR's mmap
//! (`VFIO_IOMMU_MAP_DMA`); a no-IOMMU group container gives the BAR's physical address.

use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::sync::Arc;

use vfio_core::{
    Addressing, Container, DmaAccess, DmaBuffer, Errno, Error, EventFd, Interface, MappedRegion, Mode, OwnedDmaMapping,
    PeerMapping, PeerRoute,
};
use vfio_pci::{Command, PciDevice};
use vfio_tests::edu::{Direction, EDU_MAX_DMA, Edu};
use vfio_tests::{FdSnapshot, Outcome, TestResult, device_from_env, ensure, skip};

/// Where the peer range starts in the CMB, and its length (one page).
const PEER_OFF: u64 = 0x10_0000;
const PEER_LEN: u64 = 0x1000;
/// IOVAs (edu's DMA mask is 28 bits: below 256 MiB).
const RAM_IOVA: u64 = 0x10_0000;
const PEER_IOVA: u64 = 0x80_0000;
const OTHER_IOVA: u64 = 0xa0_0000;
const LEN: usize = EDU_MAX_DMA as usize;
const CMB_SIZE: u64 = 2 << 20;

fn pattern(seed: u8) -> Vec<u8> {
    (0..PEER_LEN as u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed.wrapping_mul(0x5b))
        .collect()
}

/// FNV-1a over the bytes: what the tests print from each side.
fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The mode an interface-named test runs in: with an IOMMU when offered, else no-IOMMU.
fn mode_of(interface: Interface) -> Result<Mode, String> {
    for addressing in [Addressing::Iova, Addressing::Physical] {
        let m = Mode::new(interface, addressing);
        if vfio_tests::offered(m) {
            return Ok(m);
        }
    }
    Err(format!(
        "no {interface:?} mode offered by this kernel ({:?})",
        vfio_core::detect()
    ))
}

/// A container, and in group mode the same one typed (to ask its backend).
type Containers = (Arc<dyn Container>, Option<Arc<vfio_group::Container>>);

/// A container of `mode`, and in group mode the typed one (to ask its backend).
fn container(mode: Mode) -> Result<Containers, String> {
    if mode.interface() == Interface::Group {
        let g = Arc::new(vfio_group::Container::open(mode.addressing()).map_err(|e| e.to_string())?);
        return Ok((g.clone(), Some(g)));
    }
    Ok((vfio_tests::container_or_reason(mode)?, None))
}

/// edu and the CMB nvme open in one container, edu ready for DMA with MSI, a RAM page mapped,
/// the CMB's BAR2 mapped.
struct Rig {
    mode: Mode,
    c: Arc<dyn Container>,
    group: Option<Arc<vfio_group::Container>>,
    edu: Edu,
    irq: EventFd,
    ram: OwnedDmaMapping,
    cmb: PciDevice,
    bar2: Option<vfio_pci::Bar>,
}

impl Rig {
    fn new(mode: Mode) -> Result<Rig, Box<dyn std::error::Error>> {
        let (c, group) = container(mode)?;
        let edu_addr = device_from_env("VFIO_TEST_EDU")?;
        let cmb_addr = device_from_env("VFIO_TEST_NVME_CMB")?;
        let pci = PciDevice::open_in(c.as_ref(), &edu_addr)?;
        pci.enable_bus_master()?;
        let irq = EventFd::new()?;
        pci.enable_msi([&irq])?;
        let edu = Edu::new(pci)?;
        let cmb = PciDevice::open_in(c.as_ref(), &cmb_addr)?;
        cmb.set_command(cmb.command()? | Command::MEMORY_SPACE)?;
        let bar2 = cmb.bar(2)?;
        let ram = OwnedDmaMapping::new(
            c.clone(),
            DmaBuffer::new(PEER_LEN as usize)?,
            RAM_IOVA,
            DmaAccess::READ_WRITE,
        )?;
        Ok(Rig {
            mode,
            c,
            group,
            edu,
            irq,
            ram,
            cmb,
            bar2: Some(bar2),
        })
    }

    /// The route a [`PeerMapping`] must take in this container.
    fn expected_route(&self) -> vfio_core::Result<PeerRoute> {
        Ok(match &self.group {
            Some(g) => match g.backend()? {
                vfio_group::Backend::IommufdCompat => PeerRoute::DmaBuf,
                _ => PeerRoute::Mmap,
            },
            None => PeerRoute::DmaBuf,
        })
    }

    fn is_type1(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| matches!(g.backend(), Ok(vfio_group::Backend::Type1)))
    }

    fn bar2(&self) -> &vfio_pci::Bar {
        self.bar2.as_ref().expect("BAR2 mapped")
    }

    /// The mmap of BAR2 (the CMB is mappable whole), for the container's raw MMIO calls.
    fn bar2_map(&self) -> &MappedRegion {
        self.bar2().mapping_at(0, CMB_SIZE).expect("BAR2 mmapped whole").0
    }

    fn map_peer(&self, iova: u64) -> vfio_core::Result<PeerMapping> {
        self.cmb.map_peer_bar(
            self.c.clone(),
            self.bar2(),
            PEER_OFF,
            PEER_LEN,
            iova,
            DmaAccess::READ_WRITE,
        )
    }

    /// RAM -> edu -> the device address `to` (the CMB when it is mapped there).
    fn dma_to(&self, to: u64, data: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
        self.ram.buffer().write(0, data)?;
        self.edu
            .dma(Direction::ToDevice, self.ram.device_addr(), LEN as u64, &self.irq)?;
        self.edu.dma(Direction::FromDevice, to, LEN as u64, &self.irq)?;
        Ok(())
    }

    /// The device address `from` -> edu -> RAM; the RAM's bytes afterwards.
    fn dma_from(&self, from: u64) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        self.edu.dma(Direction::ToDevice, from, LEN as u64, &self.irq)?;
        self.ram.buffer().fill(0);
        self.edu
            .dma(Direction::FromDevice, self.ram.device_addr(), LEN as u64, &self.irq)?;
        let mut out = vec![0u8; LEN];
        self.ram.buffer().read(0, &mut out)?;
        Ok(out)
    }

    /// The CMB's bytes of the peer range, read through the BAR mapping.
    fn cmb_bytes(&self) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut out = vec![0u8; LEN];
        self.bar2().read_bytes(PEER_OFF, &mut out)?;
        Ok(out)
    }

    fn cmb_fill(&self, data: &[u8]) -> vfio_core::Result<()> {
        self.bar2().write_bytes(PEER_OFF, data)
    }

    /// Whether a DMA of a fresh pattern to `addr` lands in the CMB: the CMB is first set to
    /// another pattern through the mapping, and must end up with the DMA's bytes or keep its own.
    fn dma_lands(&self, addr: u64, seed: u8) -> Result<bool, Box<dyn std::error::Error>> {
        let before = pattern(seed.wrapping_add(100));
        self.cmb_fill(&before)?;
        let want = pattern(seed);
        self.dma_to(addr, &want)?;
        let got = self.cmb_bytes()?;
        if got[..] == want[..LEN] {
            return Ok(true);
        }
        if got[..] == before[..LEN] {
            return Ok(false);
        }
        Err(format!(
            "the CMB holds neither the DMA's bytes nor its own (checksum {:#x})",
            checksum(&got)
        )
        .into())
    }
}

fn rig_or_skip(interface: Interface) -> Result<Rig, TestResult> {
    let mode = mode_of(interface).map_err(skip)?;
    match Rig::new(mode) {
        Ok(r) => Ok(r),
        Err(e) if e.to_string().contains("is not set") => Err(skip(e.to_string())),
        Err(e) => Err(Err(e)),
    }
}

macro_rules! rig {
    ($interface:expr) => {
        match rig_or_skip($interface) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        }
    };
}

fn cmb_bar_is_a_2mib_prefetchable_mmap() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_NVME_CMB") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let cmb = PciDevice::open(&addr, None)?;
    let info = cmb.bar_info(2)?.ok_or("BAR2 is not implemented")?;
    ensure!(info.size == CMB_SIZE, "BAR2 is {:#x} bytes", info.size);
    ensure!(
        info.region.flags.contains(vfio_core::RegionFlags::MMAP),
        "BAR2 is not mmappable: {:?}",
        info.region.flags
    );
    ensure!(
        info.kind == vfio_pci::BarKind::Memory64 && info.prefetchable,
        "BAR2 is {:?}, prefetchable {}",
        info.kind,
        info.prefetchable
    );
    cmb.set_command(cmb.command()? | Command::MEMORY_SPACE)?;
    let bar2 = cmb.bar(2)?;
    for at in [0, CMB_SIZE - 8] {
        bar2.write64(at, 0x0123_4567_89ab_cdef ^ at)?;
        let back = bar2.read64(at)?;
        ensure!(back == 0x0123_4567_89ab_cdef ^ at, "CMB at {at:#x} read back {back:#x}");
    }
    println!(
        "    {addr} BAR2: {:#x} bytes, 64-bit prefetchable, mmapped, written and read back at both ends",
        info.size
    );
    Ok(Outcome::Pass)
}

fn dma_buf_export_contract() -> TestResult {
    let addr = match device_from_env("VFIO_TEST_NVME_CMB") {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let cmb = PciDevice::open(&addr, None)?;
    cmb.set_command(cmb.command()? | Command::MEMORY_SPACE)?;
    let whole = match cmb.device().export_dma_buf(2, &[(0, CMB_SIZE)]) {
        Err(e @ Error::Unsupported { .. }) => return skip(format!("the kernel has no dma-buf export: {e}")),
        r => r?,
    };
    let slice = cmb.export_bar(2, 0x10_0000, 0x1000)?;
    ensure!(
        whole.len() == CMB_SIZE && slice.len() == 0x1000,
        "lengths {:#x} {:#x}",
        whole.len(),
        slice.len()
    );
    ensure!(
        slice.ranges() == [(0x10_0000, 0x1000)] && slice.region() == Some(2),
        "{slice:?}"
    );
    for (buf, size) in [(&whole, CMB_SIZE), (&slice, 0x1000)] {
        let fd = buf.as_fd();
        let flags = rustix::io::fcntl_getfd(fd)?;
        ensure!(
            flags.contains(rustix::io::FdFlags::CLOEXEC),
            "dma-buf fd without FD_CLOEXEC"
        );
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
        ensure!(info.contains(&format!("size:\t{size}\n")), "fdinfo: {info}");
        ensure!(info.contains("exp_name:\tvfio_pci_core\n"), "fdinfo: {info}");
        // SAFETY: a fresh mapping the kernel is expected to refuse; unmapped if it does not.
        let m = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                0x1000,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                fd,
                0,
            )
        };
        match m {
            Err(Errno::INVAL) => {}
            Ok(p) => {
                // SAFETY: the mapping just made, not used.
                let _ = unsafe { rustix::mm::munmap(p, 0x1000) };
                return Err("mmap of a vfio dma-buf succeeded".into());
            }
            Err(e) => return Err(format!("mmap of a vfio dma-buf: {e}, expected EINVAL").into()),
        }
    }
    let two = cmb.device().export_dma_buf(2, &[(0, 0x1000), (0x1f_f000, 0x1000)])?;
    ensure!(two.len() == 0x2000, "two ranges: {:#x}", two.len());
    let dup = two.try_clone()?;
    ensure!(
        dup.as_fd().as_raw_fd() != two.as_fd().as_raw_fd(),
        "clone shares the fd number"
    );
    println!(
        "    {addr} BAR2: whole (2 MiB) and 4 KiB at 1 MiB exported: CLOEXEC, fdinfo exp_name vfio_pci_core, mmap EINVAL; two ranges export too"
    );
    Ok(Outcome::Pass)
}

fn edu_cmb_round_trip(interface: Interface) -> TestResult {
    let rig = rig!(interface);
    let peer = rig.map_peer(PEER_IOVA)?;
    let want = rig.expected_route()?;
    ensure!(
        peer.route() == want,
        "{} container: route {:?}, expected {want:?}",
        rig.mode,
        peer.route()
    );
    if rig.mode.addressing() == Addressing::Physical {
        // Without an IOMMU the device address is the BAR's physical address (sysfs `resource`,
        // third line: BAR2), whichever route gave it (group: sysfs; cdev: NOIOMMU_GET_PA).
        let path = vfio_core::Sysfs::default()
            .pci_device_dir(&rig.cmb.address())
            .join("resource");
        let res = std::fs::read_to_string(path)?;
        let start = res
            .lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().next())
            .ok_or("no BAR2 line")?;
        let start = u64::from_str_radix(start.trim_start_matches("0x"), 16)?;
        ensure!(
            peer.device_addr() == start + PEER_OFF,
            "device address {:#x}, BAR2 starts at {start:#x}",
            peer.device_addr()
        );
    }
    // RAM -> edu -> CMB, read back through the CMB's mapping.
    rig.cmb_fill(&vec![0u8; PEER_LEN as usize])?;
    let a = pattern(1);
    rig.dma_to(peer.device_addr(), &a)?;
    let got = rig.cmb_bytes()?;
    if let Some(i) = got.iter().zip(&a).position(|(x, y)| x != y) {
        return Err(format!("CMB byte {i} is {:#x}, the DMA wrote {:#x}", got[i], a[i]).into());
    }
    println!(
        "    {}: {LEN} bytes RAM -> edu -> CMB ({:?} route, device address {:#x}): checksum RAM {:#x}, CMB {:#x}",
        rig.mode,
        peer.route(),
        peer.device_addr(),
        checksum(&a[..LEN]),
        checksum(&got)
    );
    // CMB (written through its mapping) -> edu -> RAM.
    let b = pattern(2);
    rig.cmb_fill(&b)?;
    let back = rig.dma_from(peer.device_addr())?;
    if let Some(i) = back.iter().zip(&b).position(|(x, y)| x != y) {
        return Err(format!("RAM byte {i} is {:#x}, the CMB holds {:#x}", back[i], b[i]).into());
    }
    println!(
        "    {}: {LEN} bytes CMB -> edu -> RAM: checksum CMB {:#x}, RAM {:#x}",
        rig.mode,
        checksum(&b[..LEN]),
        checksum(&back)
    );
    Ok(Outcome::Pass)
}

/// The revocation tests need an IOMMU and the dma-buf route.
fn revocable_rig(interface: Interface) -> Result<Rig, TestResult> {
    let rig = rig_or_skip(interface)?;
    if rig.mode.addressing() == Addressing::Physical {
        return Err(skip("no IOMMU: DMA uses physical addresses, nothing to revoke"));
    }
    if rig.is_type1() {
        return Err(skip(
            "the type1 driver maps the BAR's mmap, which is never revoked (type1_bar_mapping_outlives_reset)",
        ));
    }
    Ok(rig)
}

macro_rules! revocable_rig {
    ($interface:expr) => {
        match revocable_rig($interface) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        }
    };
}

/// After the revocation: the import at PEER_IOVA no longer lands; the IOVA stays taken (EEXIST);
/// its unmap succeeds; the same dma-buf imported again lands.
fn check_revoked_then_reimport(rig: &Rig, peer: PeerMapping, what: &str) -> TestResult {
    ensure!(
        !rig.dma_lands(peer.device_addr(), 3)?,
        "after {what}, a DMA to the import still lands in the CMB"
    );
    let buf = peer.dma_buf().ok_or("no dma-buf on the DmaBuf route")?;
    let again = rig.c.map_dma_buf(buf, PEER_IOVA, DmaAccess::READ_WRITE).unwrap_err();
    ensure!(
        again.errno() == Some(Errno::EXIST),
        "a new import at the revoked IOVA: {again}"
    );
    let unmapped = rig.c.unmap_dma(PEER_IOVA, PEER_LEN)?;
    ensure!(unmapped == PEER_LEN, "unmap of the revoked import: {unmapped:#x} bytes");
    let addr = rig.c.map_dma_buf(buf, PEER_IOVA, DmaAccess::READ_WRITE)?;
    let landed = rig.dma_lands(addr, 4)?;
    rig.c.unmap_dma(PEER_IOVA, PEER_LEN)?;
    ensure!(landed, "the dma-buf imported again after {what}: DMA does not land");
    println!(
        "    {}: after {what} the DMA stays out of the CMB, the IOVA is EEXIST, unmap ok, re-import lands",
        rig.mode
    );
    drop(peer); // unmapped already: ENOENT, ignored
    Ok(Outcome::Pass)
}

fn import_revoked_by_reset(interface: Interface) -> TestResult {
    let rig = revocable_rig!(interface);
    let peer = rig.map_peer(PEER_IOVA)?;
    ensure!(
        rig.dma_lands(peer.device_addr(), 1)?,
        "the DMA before the reset did not land"
    );
    rig.cmb.reset()?;
    let b = pattern(9);
    rig.cmb_fill(&b)?;
    ensure!(
        rig.cmb_bytes()? == b[..LEN],
        "the CMB mapping does not work after the reset"
    );
    check_revoked_then_reimport(&rig, peer, "VFIO_DEVICE_RESET")
}

fn import_revoked_by_memory_disable() -> TestResult {
    let rig = revocable_rig!(Interface::Cdev);
    let peer = rig.map_peer(PEER_IOVA)?;
    ensure!(
        rig.dma_lands(peer.device_addr(), 1)?,
        "the DMA before the toggle did not land"
    );
    let cmd = rig.cmb.command()?;
    rig.cmb.set_command(cmd - Command::MEMORY_SPACE)?;
    rig.cmb.set_command(cmd | Command::MEMORY_SPACE)?;
    check_revoked_then_reimport(&rig, peer, "COMMAND.MEM cleared and set again")
}

fn import_revoked_by_close() -> TestResult {
    let mut rig = revocable_rig!(Interface::Cdev);
    let peer = rig.map_peer(PEER_IOVA)?;
    ensure!(
        rig.dma_lands(peer.device_addr(), 1)?,
        "the DMA before the close did not land"
    );
    let kept = rig.cmb_bytes()?;
    let buf = peer.dma_buf().ok_or("no dma-buf on the DmaBuf route")?.try_clone()?;
    let cmb_addr = rig.cmb.address();
    // Every handle of the CMB device goes; the dma-buf stays.
    rig.bar2 = None;
    let cmb = std::mem::replace(&mut rig.cmb, rig.edu.pci.clone());
    drop(cmb);
    let late = pattern(5);
    rig.dma_to(peer.device_addr(), &late)?;
    rig.cmb = PciDevice::open_in(rig.c.as_ref(), &cmb_addr)?;
    rig.cmb.set_command(rig.cmb.command()? | Command::MEMORY_SPACE)?;
    rig.bar2 = Some(rig.cmb.bar(2)?);
    let now = rig.cmb_bytes()?;
    ensure!(
        now != late[..LEN],
        "the DMA after the exporter closed landed in the CMB"
    );
    ensure!(
        now == kept,
        "the CMB changed across close and reopen (checksum {:#x} -> {:#x})",
        checksum(&kept),
        checksum(&now)
    );
    let e = rig.c.map_dma_buf(&buf, OTHER_IOVA, DmaAccess::READ_WRITE).unwrap_err();
    ensure!(
        e.errno() == Some(Errno::NODEV),
        "import of the closed exporter's dma-buf: {e}"
    );
    ensure!(e.to_string().contains("revoked"), "{e}");
    drop(peer);
    let fresh = rig.map_peer(PEER_IOVA)?;
    ensure!(
        rig.dma_lands(fresh.device_addr(), 6)?,
        "a new export after the reopen: DMA does not land"
    );
    println!(
        "    {}: after the exporter closed the DMA stays out of the CMB; its dma-buf: {e}; a new export lands",
        rig.mode
    );
    Ok(Outcome::Pass)
}

fn low_power_revokes_the_import() -> TestResult {
    let mut rig = revocable_rig!(Interface::Cdev);
    let peer = rig.map_peer(PEER_IOVA)?;
    ensure!(
        rig.dma_lands(peer.device_addr(), 1)?,
        "the DMA before low power did not land"
    );
    // No mapping may be live for the entry.
    rig.bar2 = None;
    rig.cmb.device().low_power_enter()?;
    rig.cmb.device().low_power_exit()?;
    rig.bar2 = Some(rig.cmb.bar(2)?);
    check_revoked_then_reimport(&rig, peer, "low-power entry and exit")
}

fn type1_bar_mapping_outlives_reset() -> TestResult {
    let rig = rig!(Interface::Group);
    if !rig.is_type1() {
        return skip("not the type1 driver: iommufd revokes (import_revoked_by_*), no-IOMMU maps nothing");
    }
    let peer = rig.map_peer(PEER_IOVA)?;
    ensure!(peer.route() == PeerRoute::Mmap, "route {:?}", peer.route());
    ensure!(
        rig.dma_lands(peer.device_addr(), 1)?,
        "the DMA before the reset did not land"
    );
    rig.cmb.reset()?;
    ensure!(
        rig.dma_lands(peer.device_addr(), 2)?,
        "after the reset the type1 mapping no longer lands"
    );
    // The raw map of the mmap is accepted by the type1 driver too.
    // SAFETY: the BAR mapping and its device stay alive until the unmap below.
    let addr = unsafe {
        rig.c
            .map_dma_raw(rig.bar2_map().as_ptr(), PEER_LEN, OTHER_IOVA, DmaAccess::READ_WRITE)?
    };
    ensure!(addr == OTHER_IOVA, "raw map returned {addr:#x}");
    rig.c.unmap_dma(OTHER_IOVA, PEER_LEN)?;
    println!("    type1: the BAR mapping survives VFIO_DEVICE_RESET; map_dma_raw of the mmap works");
    Ok(Outcome::Pass)
}

fn bar_mmap_map_is_efault_on_iommufd(interface: Interface) -> TestResult {
    let rig = revocable_rig!(interface);
    // SAFETY: expected to be refused; unmapped below if it is not.
    let raw = unsafe {
        rig.c
            .map_dma_raw(rig.bar2_map().as_ptr(), PEER_LEN, OTHER_IOVA, DmaAccess::READ_WRITE)
    };
    match raw {
        Err(e) if e.errno() == Some(Errno::FAULT) => println!("    {}: map_dma_raw of the BAR mmap: {e}", rig.mode),
        Err(e) => return Err(format!("map_dma_raw of the BAR mmap: {e}, expected EFAULT").into()),
        Ok(_) => {
            rig.c.unmap_dma(OTHER_IOVA, PEER_LEN)?;
            return Err("iommufd mapped a BAR's mmap".into());
        }
    }
    // SAFETY: refused without a kernel call.
    let mmio = unsafe {
        rig.c
            .map_mmio_raw(rig.bar2_map(), PEER_OFF, PEER_LEN, OTHER_IOVA, DmaAccess::READ_WRITE)
    };
    let e = mmio.err().ok_or("map_mmio_raw accepted on iommufd")?;
    ensure!(
        matches!(e, Error::Unsupported { .. }) && e.to_string().contains("dma-buf"),
        "{e}"
    );
    let peer = rig.map_peer(PEER_IOVA)?;
    ensure!(peer.route() == PeerRoute::DmaBuf, "route {:?}", peer.route());
    ensure!(rig.dma_lands(peer.device_addr(), 1)?, "the dma-buf route does not land");
    println!("    map_mmio_raw: {e}; PeerMapping took the dma-buf route");
    Ok(Outcome::Pass)
}

fn dma_buf_refused_clearly_without_kernel_support() -> TestResult {
    let rig = rig!(Interface::Group);
    let e = match rig.cmb.export_bar(2, PEER_OFF, PEER_LEN) {
        Ok(_) => return skip("the kernel has the feature (the refusal is checked on debian61)"),
        Err(e) => e,
    };
    ensure!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let text = e.to_string();
    ensure!(
        text.contains("6.19") && text.contains("VFIO_PCI_DMABUF") && text.contains(&rig.cmb.address().to_string()),
        "{text}"
    );
    let peer = rig.map_peer(PEER_IOVA)?;
    ensure!(peer.route() == PeerRoute::Mmap, "route {:?}", peer.route());
    ensure!(rig.dma_lands(peer.device_addr(), 1)?, "the mmap route does not land");
    println!("    {text}\n    PeerMapping took the mmap route and the DMA landed");
    Ok(Outcome::Pass)
}

// ---- bad input -------------------------------------------------------------------------------

/// Runs `case` on the CMB nvme (or `var`'s device) opened in the preferred mode, checks its error
/// with `judge`, and that no fd was left behind.
fn bad(var: &str, case: impl Fn(&PciDevice) -> Result<Result<(), String>, Box<dyn std::error::Error>>) -> TestResult {
    let addr = match device_from_env(var) {
        Ok(a) => a,
        Err(why) => return skip(why),
    };
    let dev = PciDevice::open(&addr, None)?;
    dev.set_command(dev.command()? | Command::MEMORY_SPACE)?;
    if !dev
        .device()
        .feature_probe(vfio_sys::VFIO_DEVICE_FEATURE_DMA_BUF, vfio_core::FeatureAccess::GET)?
    {
        return skip("the kernel has no dma-buf export (dma_buf_refused_clearly_without_kernel_support)");
    }
    let _ = case(&dev)?;
    let fds = FdSnapshot::take()?;
    let verdict = case(&dev)?;
    fds.check("fds leaked")?;
    verdict?;
    Ok(Outcome::Pass)
}

/// The raw `VFIO_DEVICE_FEATURE_DMA_BUF` of one range, without the library's checks.
fn raw_export(dev: &PciDevice, region: u32, offset: u64, len: u64) -> Result<i32, Error> {
    let mut p = Vec::new();
    for w in [region, (libc::O_RDWR | libc::O_CLOEXEC) as u32, 0, 1] {
        p.extend(w.to_ne_bytes());
    }
    p.extend(offset.to_ne_bytes());
    p.extend(len.to_ne_bytes());
    // SAFETY: the payload holds no pointer; a returned fd is closed right away.
    let r = unsafe { dev.device().feature_get(vfio_sys::VFIO_DEVICE_FEATURE_DMA_BUF, &mut p) };
    if let Ok(fd) = r {
        // SAFETY: the fd the kernel just returned, owned by nobody else.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
    r
}

/// `got` is InvalidArgument (or Unsupported, when `unsupported`) naming every text.
fn want(got: Result<impl std::fmt::Debug, Error>, invalid: bool, texts: &[&str]) -> Result<(), String> {
    let e = match got {
        Ok(v) => return Err(format!("accepted: {v:?}")),
        Err(e) => e,
    };
    let kind_ok = if invalid {
        matches!(e, Error::InvalidArgument { .. })
    } else {
        matches!(e, Error::Unsupported { .. })
    };
    let text = e.to_string();
    if !kind_ok || texts.iter().any(|t| !text.contains(t)) {
        return Err(format!(
            "expected {} naming {texts:?}, got {e:?}",
            if invalid { "InvalidArgument" } else { "Unsupported" }
        ));
    }
    println!("    {text}");
    Ok(())
}

fn want_errno(got: Result<i32, Error>, errno: Errno) -> Result<(), String> {
    match got {
        Err(e) if e.errno() == Some(errno) => {
            println!("    raw: {e}");
            Ok(())
        }
        other => Err(format!("raw export: {other:?}, expected {errno:?}")),
    }
}

fn bad_dma_buf_range_outside_the_bar() -> TestResult {
    bad("VFIO_TEST_NVME_CMB", |dev| {
        let name = dev.address().to_string();
        Ok(want(
            dev.export_bar(2, CMB_SIZE - 0x1000, 0x2000),
            true,
            &[&name, "region 2", "outside the BAR"],
        )
        .and_then(|()| want_errno(raw_export(dev, 2, CMB_SIZE - 0x1000, 0x2000), Errno::INVAL)))
    })
}

fn bad_dma_buf_range_unaligned() -> TestResult {
    bad("VFIO_TEST_NVME_CMB", |dev| {
        let name = dev.address().to_string();
        Ok(want(dev.export_bar(2, 0x800, 0x1000), true, &[&name, "aligned"])
            .and_then(|()| want(dev.export_bar(2, 0, 0x800), true, &[&name, "aligned"]))
            .and_then(|()| want_errno(raw_export(dev, 2, 0x800, 0x1000), Errno::INVAL)))
    })
}

fn bad_dma_buf_of_an_io_port_bar() -> TestResult {
    bad("VFIO_TEST_TESTDEV", |dev| {
        let io = match dev.bars()?.into_iter().find(|b| b.kind == vfio_pci::BarKind::Io) {
            Some(b) => b,
            None => return Ok(Err("pci-testdev has no I/O BAR".into())),
        };
        let name = dev.address().to_string();
        Ok(want(dev.export_bar(io.index, 0, 0x1000), true, &[&name, "I/O-port"])
            .and_then(|()| want_errno(raw_export(dev, io.index, 0, 0x1000), Errno::INVAL)))
    })
}

fn bad_dma_buf_of_the_config_region() -> TestResult {
    bad("VFIO_TEST_NVME_CMB", |dev| {
        let name = dev.address().to_string();
        Ok(want(
            dev.device().export_dma_buf(vfio_pci::CONFIG_REGION, &[(0, 0x1000)]),
            true,
            &[&name, "region 7"],
        )
        .and_then(|()| want(dev.export_bar(7, 0, 0x1000), true, &[&name, "BAR 7"]))
        .and_then(|()| want_errno(raw_export(dev, vfio_pci::CONFIG_REGION, 0, 0x1000), Errno::NODEV)))
    })
}

fn bad_dma_buf_into_a_type1_container() -> TestResult {
    let rig = rig!(Interface::Group);
    if !rig.is_type1() {
        return skip("only the type1 driver refuses dma-bufs (iommufd imports them; a no-IOMMU group maps nothing)");
    }
    let buf = match rig.cmb.export_bar(2, PEER_OFF, PEER_LEN) {
        Err(e @ Error::Unsupported { .. }) => return skip(format!("no dma-buf export: {e}")),
        r => r?,
    };
    let fds = FdSnapshot::take()?;
    let got = rig.c.map_dma_buf(&buf, PEER_IOVA, DmaAccess::READ_WRITE);
    fds.check("fds changed")?;
    want(got, false, &["type1", "mmap"])?;
    Ok(Outcome::Pass)
}

fn bad_dma_buf_of_two_ranges_into_an_ioas() -> TestResult {
    let rig = revocable_rig!(Interface::Cdev);
    let buf = rig.cmb.device().export_dma_buf(2, &[(0, 0x1000), (0x2000, 0x1000)])?;
    let fds = FdSnapshot::take()?;
    let got = rig.c.map_dma_buf(&buf, PEER_IOVA, DmaAccess::READ_WRITE);
    fds.check("fds changed")?;
    want(got, false, &["single-range", "2 range"])?;
    // Nothing stayed mapped there.
    let e = rig.c.unmap_dma(PEER_IOVA, 0x2000).unwrap_err();
    ensure!(e.errno() == Some(Errno::NOENT), "after the refusal: {e}");
    Ok(Outcome::Pass)
}

fn main() -> ExitCode {
    vfio_tests::run(&[
        (
            "cmb_bar_is_a_2mib_prefetchable_mmap",
            cmb_bar_is_a_2mib_prefetchable_mmap,
        ),
        ("dma_buf_export_contract", dma_buf_export_contract),
        ("edu_cmb_round_trip_group", || edu_cmb_round_trip(Interface::Group)),
        ("edu_cmb_round_trip_cdev", || edu_cmb_round_trip(Interface::Cdev)),
        ("import_revoked_by_reset_cdev", || {
            import_revoked_by_reset(Interface::Cdev)
        }),
        ("import_revoked_by_reset_group", || {
            import_revoked_by_reset(Interface::Group)
        }),
        (
            "import_revoked_by_memory_disable_cdev",
            import_revoked_by_memory_disable,
        ),
        ("import_revoked_by_close_cdev", import_revoked_by_close),
        ("low_power_revokes_the_import_cdev", low_power_revokes_the_import),
        ("type1_bar_mapping_outlives_reset", type1_bar_mapping_outlives_reset),
        ("bar_mmap_map_is_efault_on_iommufd_cdev", || {
            bar_mmap_map_is_efault_on_iommufd(Interface::Cdev)
        }),
        ("bar_mmap_map_is_efault_on_iommufd_group", || {
            bar_mmap_map_is_efault_on_iommufd(Interface::Group)
        }),
        (
            "dma_buf_refused_clearly_without_kernel_support",
            dma_buf_refused_clearly_without_kernel_support,
        ),
        ("bad_dma_buf_range_outside_the_bar", bad_dma_buf_range_outside_the_bar),
        ("bad_dma_buf_range_unaligned", bad_dma_buf_range_unaligned),
        ("bad_dma_buf_of_an_io_port_bar", bad_dma_buf_of_an_io_port_bar),
        ("bad_dma_buf_of_the_config_region", bad_dma_buf_of_the_config_region),
        ("bad_dma_buf_into_a_type1_container", bad_dma_buf_into_a_type1_container),
        (
            "bad_dma_buf_of_two_ranges_into_an_ioas",
            bad_dma_buf_of_two_ranges_into_an_ioas,
        ),
    ])
}
