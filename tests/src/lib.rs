//! The vfio-rs integration test harness and device helpers.
//!
//! Integration tests run inside the QEMU guest of `cargo xtask vm test`, or on a real machine
//! when the variables below name devices bound to vfio-pci (as root):
//!
//! - `VFIO_TEST_EDU`: PCI address of a QEMU `edu` device (1234:11e8).
//! - `VFIO_TEST_NVME`: PCI address of an NVMe controller (QEMU 1b36:0010).
//! - `VFIO_TEST_EDU_RESET`, `VFIO_TEST_EDU_NONVIABLE`, `VFIO_TEST_NVME_HOTRESET`,
//!   `VFIO_TEST_TESTDEV`, `VFIO_TEST_VIRTIO`: the devices of the special cases (see README.md).
//! - `VFIO_TEST_NVME_CMB`: an NVMe controller with a controller memory buffer in BAR2 (QEMU
//!   `cmb_size_mb=2`), the peer-to-peer DMA target.
//! - `VFIO_TEST_NVME_SRIOV`: an SR-IOV physical function on vfio-pci with VFs to enable (QEMU
//!   nvme `sriov_max_vfs=2`, 8086:5845; the kernel needs `vfio_pci.enable_sriov=1`).
//! - `VFIO_TEST_DEVICE`: any functions on vfio-pci, comma separated, for the device-agnostic
//!   `any_device` suite (docs/hardware-runner.md); in the guest, every function `/init` bound to
//!   vfio-pci whose group is viable.
//!
//! A test that cannot run (no device, a mode the kernel lacks) reports `skipped: <reason>`; it
//! never passes silently. Each test binary prints `test <name> ... ok|FAILED|skipped: <reason>`
//! and ends with the line `N passed, N failed, N skipped`.
//!
//! # Behaviour index
//!
//! Which test proves what. Each entry is a behaviour in plain words (naming the ioctl and errno
//! where there is one), then `->` and every test that asserts it, written as the harness prints it:
//! `binary::test` is the line `test <test> ... ok` printed by `tests/tests/<binary>.rs`. The
//! `conformance` checks run once per mode and print as `check@mode`, the mode being `type1`,
//! `type1v2`, `cdev`, `noiommu-group` or `noiommu-cdev`; `check@*` means all five and
//! `check@noiommu-*` the last two. Names in braces, as in
//! `edu::edu_id_and_liveness_{group,cdev,noiommu}`, stand for one test each.
//!
//! Every `bad_input` case also asserts that its error is typed (`InvalidArgument`, `Unsupported` or
//! a kernel errno), that its message names the object (device address, path, IOVA, BAR...), and
//! that no fd or memory mapping was left behind; the lines below do not repeat that.
//!
//! Boots (README.md, Tests): variant A has the type1 driver, variant B serves `/dev/vfio/vfio` with
//! iommufd's compatibility container, so the `group` binary's type1 tests exercise one backend on
//! each; `debian61` has no cdev mode. IOMMU `intel` or `virtio` offer group and cdev mode; `none`
//! offers only the no-IOMMU forms. A test whose mode or device a boot lacks prints
//! `skipped: <reason>`. `VFIO_TEST_EDU_NONVIABLE` and `VFIO_TEST_NVME_HOTRESET` exist only on intel
//! boots (xtask `qemu.rs`); the notes say where else a test only runs somewhere specific.
//!
//! ## Opening devices, modes and containers
//!
//! - Mode detection matches the machine: `vfio_core::detect()` reports cdev mode exactly when sysfs
//!   shows iommufd and VFIO device cdevs, group mode exactly when there is an IOMMU and no-IOMMU
//!   mode exactly when there is none; `preferred()` is `VFIO_RS_MODE` when set, else cdev, else
//!   no-IOMMU, else group -> `core::modes_match_the_machine` (only in the harness: it needs
//!   `VFIO_TEST_IOMMU`).
//! - The edu opens in every mode: config-space ids 1234:11e8, BAR0's ID register reads 0x010000ed,
//!   the liveness register returns the complement of what was written ->
//!   `edu::edu_id_and_liveness_{group,cdev,noiommu}` (ids, three values),
//!   `conformance::open_id_liveness@*` (ID register and one value).
//! - Closing everything releases the device: it opens three times in one container, then again in a
//!   fresh container once the first is dropped -> `conformance::reopen_after_close@*`; see also
//!   `teardown::every_drop_order_*` and `reliability::open_close_cycles_keep_fds_flat`.
//! - On a kernel without cdev mode, every cdev entry point (`Iommufd::open`,
//!   `vfio_cdev::Container::new`, `PciDevice::open` with `Mode::CDEV`, `UnboundDevice::open`) fails
//!   with `Unsupported` that names what is missing (`/dev/iommu`, `CONFIG_IOMMUFD`,
//!   `CONFIG_VFIO_DEVICE_CDEV`, the device) and blames the kernel; `preferred()` is group mode and
//!   `PciDevice::open(.., None)` opens the device in it ->
//!   `cdev::cdev_refused_clearly_without_kernel_support` (runs only where the kernel lacks cdev
//!   mode, i.e. `debian61`; skips elsewhere).
//! - A container adopted from a `/dev/vfio/vfio` fd (`vfio_group::Container::from_fd`) has the
//!   type1v2 extension and opens the edu; adopting `/dev/null` is ENOTTY ->
//!   `group::container_from_fd` (IOMMU boots).
//! - A device held by one container cannot be opened in another (cdev: an errno naming the device;
//!   group: the group node's "already open") -> `bad_input::device_already_assigned_elsewhere`.
//! - Assigning the same device twice to one `vfio_cdev::Container` is `InvalidArgument` ->
//!   `cdev::cdev_assign_twice_to_same_container_fails`.
//! - Opening a device that is on no driver fails with "not bound to any driver" ->
//!   `core::sysfs_unbinds_and_rebinds_nvme`, `bad_input::device_on_no_driver`.
//! - Opening a device on another driver is `InvalidArgument` "not vfio-pci" naming that driver ->
//!   `bad_input::device_on_another_driver`.
//! - `Sysfs`: the nvme's identity (1b36:0010, class 0x010802), its IOMMU group lists it, its driver
//!   is vfio-pci; `restore_driver(.., None)` unbinds it; `bind_vfio_pci` binds it back (previous
//!   driver none) and it opens again -> `core::sysfs_unbinds_and_rebinds_nvme`.
//! - `VfioPciBinding::bind(addr, true)` binds a driverless device to vfio-pci, reports no previous
//!   driver and gives the device back to no driver on drop; with `false` it stays on vfio-pci ->
//!   `pci::binding_helper_binds_and_gives_back`.
//! - The inventory (what `lsvfio` prints) lists the edu as 1234:11e8 on vfio-pci with exactly the
//!   modes the kernel offers, and each of those modes opens it; the non-viable edu is listed not
//!   viable, with blockers and no mode -> `pci::inventory_matches_the_machine`.
//!
//! ## Groups and group containers
//!
//! - `VFIO_IOMMU_GET_INFO` and the backend are refused before any group joins; after one joins, the
//!   container has the IOMMU type asked for, the PGSIZES flag, 4 KiB pages, non-empty sorted
//!   non-overlapping IOVA ranges and a non-zero DMA limit, and `page_sizes()` (inherent and through
//!   the `Container` trait) equals those page sizes; the backend is `Type1` exactly when
//!   `vfio_iommu_type1` is loaded, and then the migration capability has 4 KiB dirty pages; a
//!   second, different `VFIO_SET_IOMMU` type is refused -> `group::container_info_type1`,
//!   `group::container_info_type1v2`.
//! - Two groups (edu, nvme) join one type1v2 container: both listed, both viable with the container
//!   set, DMA works -> `group::two_groups_one_container`.
//! - Two containers are separate address spaces: the same IOVA maps in both (no EEXIST), DMA works,
//!   each keeps its one group -> `group::two_containers`.
//! - `VFIO_GROUP_GET_STATUS`: a fresh group is viable without container, then has it once the
//!   device opens. `VFIO_GROUP_UNSET_CONTAINER` with the device open is EBUSY on the type1 driver
//!   and allowed by iommufd's compatibility container; after the removal the group and IOMMU type
//!   are gone, a second removal fails, and the group rejoins with type1v2 again ->
//!   `group::group_status_and_remove`; the EBUSY alone (type1 driver only, variant A) ->
//!   `bad_input::remove_a_group_with_its_device_open`.
//! - A device in a non-viable group is refused: group mode says "not viable" and names the
//!   host-driven device in the group; cdev bind fails with a kernel errno ->
//!   `group::non_viable_group`, `bad_input::non_viable_group` (the latter group mode only; both run
//!   on intel boots only).
//! - The deprecated `vfio_group::legacy` API: `device_group` agrees with sysfs; `group_fd` fails
//!   before `group_bind` and after `group_unbind`, and in between is the bound group ->
//!   `group::legacy_group_api`.
//! - When the last device of a group leaves vfio-pci, `forget_detached` (empty while attached)
//!   returns the group and the container is left without groups or IOMMU type; the device reopens
//!   afterwards, type1v2 is set again and a DMA maps ->
//!   `group::group_unbound_is_forgotten_and_reopened`.
//! - Mapping in a type1 container after its last group left fails with a kernel errno ->
//!   `bad_input::map_after_the_last_group_left` (type1 driver only).
//!
//! ## cdev mode: binding and attaching
//!
//! - `VFIO_DEVICE_GET_INFO` on a cdev not yet bound is EINVAL ->
//!   `cdev::cdev_get_info_before_bind_fails`.
//! - `VFIO_DEVICE_BIND_IOMMUFD` with an eventfd for the iommufd is EBADF or EBADFD ->
//!   `cdev::cdev_bind_to_non_iommufd_fails`.
//! - Binding a bound device again is refused: through a dup of its fd EINVAL ->
//!   `cdev::cdev_repeated_bind_fails`; through a second open of the cdev, a kernel errno naming the
//!   device -> `bad_input::bind_a_cdev_twice`.
//! - Binding a device that is not a VF with a VF token is EINVAL and leaves it unbound (a plain
//!   bind then works) -> `cdev::cdev_vf_token_on_non_vf_is_refused`.
//! - `VFIO_DEVICE_ATTACH_IOMMUFD_PT` to an id that is no IOAS or HWPT is ENOENT or EINVAL ->
//!   `cdev::cdev_attach_to_invalid_id_fails`; to a destroyed IOAS, ENOENT ->
//!   `bad_input::attach_to_a_destroyed_ioas`.
//! - Attaching to an IOAS of another iommufd is `InvalidArgument` ->
//!   `cdev::cdev_attach_across_iommufds_is_refused`.
//! - PASID attach on a device without the PASID capability is `Unsupported` ->
//!   `cdev::cdev_pasid_attach_unsupported_on_edu`.
//! - `IOMMU_DESTROY` of an IOAS with a device attached is EBUSY; detach then works ->
//!   `cdev::cdev_ioas_destroy_while_attached_is_busy`.
//! - Two containers on one iommufd get distinct IOASes; a device detached from one and attached to
//!   the other DMAs through each -> `cdev::cdev_device_moved_between_two_ioases`.
//! - Attaching to a second IOAS without detaching replaces the first while both are mapped: the
//!   next DMA lands in the new IOAS's memory and the old buffer is untouched ->
//!   `cdev::cdev_replace_attached_ioas_while_mapped` (skips in no-IOMMU cdev).
//! - A HWPT allocated on the device's IOMMU (`IOMMU_HWPT_ALLOC`) is what `attach` reports, and DMA
//!   goes through it -> `cdev::cdev_dma_through_hwpt_at_kernel_chosen_iova` (skips in no-IOMMU
//!   cdev, and where HWPT allocation is `Unsupported`).
//! - `Ioas::adopt` of an id that is no IOAS is ENOENT -> `bad_input::adopt_a_destroyed_ioas`,
//!   `secondary::secondary_adopts_passed_fds_and_dmas_its_own_memory`.
//!
//! ## DMA map/unmap errno contracts
//!
//! - Unmapping a range where nothing is mapped is ENOENT through the mode-independent
//!   `Container::unmap_dma` (`VFIO_IOMMU_UNMAP_DMA` or `IOMMU_IOAS_UNMAP`) ->
//!   `group::dma_contract_type1`, `group::dma_contract_type1v2`,
//!   `conformance::map_errors@{type1,type1v2,cdev}`, `bad_input::unmap_of_a_never_mapped_range`
//!   (preferred mode, IOMMU boots); `IOMMU_IOAS_UNMAP` of a hole directly ->
//!   `iommufd_mock::ioas_unmap_hole_is_enoent`.
//! - The raw type1 `VFIO_IOMMU_UNMAP_DMA` of a hole (`unmap_range`) succeeds with 0 bytes, on the
//!   type1 driver and on iommufd's compatibility container -> `group::dma_contract_type1`,
//!   `group::dma_contract_type1v2`.
//! - A map overlapping an existing one is EEXIST (`VFIO_IOMMU_MAP_DMA`, `IOMMU_IOAS_MAP`) ->
//!   `group::dma_contract_type1`, `group::dma_contract_type1v2`,
//!   `conformance::map_errors@{type1,type1v2,cdev}`, `bad_input::overlapping_map`,
//!   `iommufd_mock::ioas_overlap_is_eexist`.
//! - Unmapping the tail page of a 2-page mapping: type1 v1 succeeds with 0 bytes and keeps the
//!   mapping whole; type1v2 is EINVAL; iommufd's compatibility type1 unmaps that page; its type1v2
//!   is ENOENT -> `group::dma_contract_type1`, `group::dma_contract_type1v2`.
//! - Unmapping the head page: type1 v1 removes the whole mapping it starts (returning its size);
//!   iommufd's compatibility type1 unmaps one page; type1v2 is EINVAL on the type1 driver and
//!   ENOENT on iommufd -> `group::dma_contract_type1`, `group::dma_contract_type1v2`.
//! - `IOMMU_IOAS_UNMAP` of either half of a mapping is ENOENT; the whole unmaps ->
//!   `iommufd_mock::ioas_splitting_a_mapping_is_refused`.
//! - A map or unmap whose IOVA + size wraps past 2^64 is EOVERFLOW (iommufd, newer type1), or
//!   EINVAL on older type1 drivers (6.1); map and unmap agree -> `group::dma_contract_type1`,
//!   `group::dma_contract_type1v2`.
//! - The last page of the last IOVA range maps and unmaps (4 KiB returned); a map just past the
//!   IOVA space is EINVAL -> `group::dma_contract_type1`, `group::dma_contract_type1v2`.
//! - A map past the last allowed IOVA is refused -> `conformance::map_errors@{type1,type1v2,cdev}`,
//!   `bad_input::iova_beyond_the_allowed_ranges` (a kernel errno).
//! - A zero-length map and a map at a misaligned IOVA are refused (kernel errno or
//!   `InvalidArgument`) -> `conformance::map_errors@{type1,type1v2,cdev}`; as kernel errnos ->
//!   `bad_input::zero_length_map`, `bad_input::unaligned_iova`. A length that is not a page
//!   multiple -> `bad_input::unaligned_length`.
//! - Unmap-all removes every mapping and reports the total: 3 pages on type1 and its compatibility
//!   container -> `group::dma_contract_type1`, `group::dma_contract_type1v2`; 0 on an empty IOAS,
//!   then 3 pages, then 0 -> `iommufd_mock::ioas_unmap_all`; 2 pages ->
//!   `cdev::cdev_dma_through_hwpt_at_kernel_chosen_iova`.
//! - A read-only (`DmaAccess::READ`) mapping blocks the device's writes, and the device still DMAs
//!   afterwards -> `group::read_only_mapping_blocks_device_writes_type1`,
//!   `group::read_only_mapping_blocks_device_writes_type1v2`.
//! - The map/unmap ENOENT and EEXIST checks of `map_errors` do not apply without an IOMMU:
//!   `conformance::map_errors@noiommu-group` and `@noiommu-cdev` always skip.
//!
//! ## IOVA ranges, page sizes and allocation
//!
//! - The container's page sizes have 4 KiB as the smallest ->
//!   `core::container_page_sizes_include_4k`; the type1 PGSIZES and IOVA ranges, with
//!   `page_sizes()` equal to `VFIO_IOMMU_GET_INFO`'s -> `group::container_info_type1`,
//!   `group::container_info_type1v2`; a no-IOMMU container reports every multiple of the CPU page
//!   size -> `group::noiommu_dma_round_trip`.
//! - `IovaPlacement::Any` (kernel-chosen IOVA) stays inside the ranges `allow_iovas` set, and the
//!   mock domain maps exactly the buffer's pages there (`IOMMU_TEST_OP_MD_CHECK_MAP`); a map larger
//!   than the room left is ENOSPC -> `iommufd_mock::ioas_auto_iova_inside_allowed_ranges`; on a
//!   real IOMMU, inside the allowed range, with DMA through it ->
//!   `cdev::cdev_dma_through_hwpt_at_kernel_chosen_iova`.
//! - `IovaAllocator` with no room left is `InvalidArgument` "exhausted" ->
//!   `bad_input::iova_allocator_exhausted`.
//! - `DmaPool` maps its buffers once: `translate` agrees with `device_addr`, the device DMAs at the
//!   translated addresses, a range past a buffer's end has no translation, and a freed buffer is
//!   gone -> `core::dma_pool_translates_per_io_without_mapping`.
//!
//! ## DMA data path
//!
//! - A DMA round trip RAM -> device -> RAM is byte-exact, each DMA ending with its completion MSI
//!   (the edu helper checks the MSI, the DMA status bit and that the engine stopped) ->
//!   `edu::edu_dma_round_trip_with_msi_{group,cdev,noiommu}` (also: the byte after the transfer is
//!   untouched), `conformance::dma_round_trip_msi@*`, `cdev::cdev_dma_round_trip_through_container`
//!   (device from `assign_device`); DMA is also verified in most tests of the `group`, `cdev`,
//!   `secondary`, `teardown` and `reliability` binaries.
//! - A 2 MiB hugetlb buffer is one aligned 2 MiB page and takes DMA ->
//!   `core::hugetlb_2m_buffer_takes_dma` (skips without 2 MiB huge pages).
//! - A 1 GiB hugetlb buffer without reserved pages is `Unsupported` naming the pool
//!   (`hugepages-1048576kB`) -> `core::hugetlb_1g_without_reservation_is_a_clear_error`,
//!   `bad_input::hugetlb_1g_without_reservation`.
//! - A zero-byte `DmaBuffer` is `InvalidArgument` -> `bad_input::dma_buffer_of_zero_bytes`.
//!
//! ## Dirty page tracking
//!
//! - `VFIO_IOMMU_DIRTY_PAGES` on a type1 (v1) container is EACCES -> `group::dirty_pages_type1`
//!   (type1 driver; on iommufd's compatibility container it checks `Unsupported`, then skips).
//! - On type1v2: a bitmap before start is EINVAL; after start every mapped page is dirty; a bitmap
//!   range splitting a mapping is EINVAL; a half-page bitmap is `InvalidArgument`; unmap with a
//!   bitmap returns the size and the pages' bits; after stop a bitmap is EINVAL ->
//!   `group::dirty_pages_type1v2` (type1 driver; `Unsupported` then skipped on iommufd's
//!   compatibility container).
//! - A dirty-tracking HWPT on a real IOMMU reports the page the device wrote and not the one it
//!   only read -> `cdev::cdev_dirty_tracking_sees_device_writes` (skips where the IOMMU reports no
//!   dirty tracking, and in no-IOMMU cdev).
//! - A dirty-tracking HWPT on the mock domain: clean before writes, exactly the pages written
//!   after, a `NO_CLEAR` read keeps the bits and a clearing read clears them, page size 3 is
//!   `InvalidArgument` -> `iommufd_mock::hwpt_dirty_tracking_reports_written_pages`.
//!
//! ## Interrupts
//!
//! - `VFIO_DEVICE_GET_IRQ_INFO` of the edu: INTx count 1, eventfd-capable, maskable, automasked;
//!   MSI count 1; MSI-X count 0 -> `core::edu_irq_info_has_intx_and_one_msi`.
//! - INTx is automasked after each delivery: a second raise waits until unmask
//!   (`VFIO_IRQ_SET_ACTION_UNMASK`), which delivers it ->
//!   `core::edu_intx_is_automasked_until_unmasked`.
//! - INTx raised while masked (`mask_intx`) is held: no event, the status register shows it
//!   asserted; unmask delivers it, the ack deasserts it ->
//!   `pci::edu_intx_masked_is_held_until_unmask`.
//! - Each INTx raise arrives once, with an unmask between raises ->
//!   `conformance::intx_mask_unmask@*` (2 raises), `pci::edu_intx_through_pci_device` (3 raises,
//!   preferred mode).
//! - Enabling more MSI vectors than the device has is EINVAL ->
//!   `core::msi_vectors_beyond_the_count_are_einval`,
//!   `bad_input::msi_with_more_vectors_than_the_device`.
//! - `VFIO_DEVICE_SET_IRQS` triggers from user space (`DATA_NONE` and `DATA_BOOL`) signal the MSI
//!   eventfd -> `core::irq_trigger_loopback_signals_the_eventfd`; after the MSI is disabled, EINVAL
//!   -> `bad_input::msi_trigger_after_disable`.
//! - MSI-X eventfds can start at any vector (3..6): triggering vector 4 signals only its eventfd;
//!   vectors past the table (64..66 of 65) are refused -> `pci::msix_vectors_in_any_range`;
//!   `set_msix_vectors` at vector 200 is EINVAL -> `bad_input::msix_vectors_beyond_the_count`.
//! - MSI-X grows while enabled where the kernel allows it (no NORESIZE): the added vector fires and
//!   the others are kept; with NORESIZE adding is EINVAL (then skipped) ->
//!   `pci_io::msix_grows_while_enabled`.
//! - Eventfds for an index without vectors (MSI-X on the edu), two eventfds for INTx, and IRQ index
//!   9 are EINVAL -> `bad_input::eventfd_for_an_index_without_vectors`,
//!   `bad_input::two_intx_eventfds`, `bad_input::irq_index_9`.
//! - ERR and REQ: the nvme has one ERR vector that does not fire by itself and fires on a trigger;
//!   the conventional-PCI edu refuses an ERR eventfd (count 0: EINVAL; or the index is EINVAL on
//!   6.1); the edu's REQ fires on a trigger -> `pci_io::err_and_req_irqs`.
//! - Unbinding a device in use from vfio-pci signals REQ; once released the unbind completes, and
//!   the rebound device opens -> `pci_io::req_irq_asks_for_the_device_back`.
//! - One epoll set over several MSI-X eventfds reports exactly the vector that fired, once ->
//!   `pci_io::epoll_reports_the_vector_that_fired`.
//! - A tokio task awaits an MSI through `AsyncEventFd` (nothing before the raise, the MSI after);
//!   `AsyncEventFd::new` outside a runtime is `Unsupported` -> `pci_io::tokio_task_awaits_an_msi`.
//!
//! ## BARs, regions and the ROM
//!
//! - The edu's BARs: BAR0 is 1 MiB, 32-bit memory; BAR1 is unimplemented; BAR index 6 is refused ->
//!   `pci::edu_capabilities_and_bars`. The nvme's BAR0 is 64-bit memory ->
//!   `pci::nvme_capabilities_msix_pcie`.
//! - `bar(7)` is `InvalidArgument` naming BAR 7; `bar(1)` of the absent BAR1 is
//!   `Unsupported` -> `bad_input::bar_index_7`, `bad_input::absent_bar`.
//! - The nvme BAR0's mmappable areas avoid the MSI-X table when it is not mappable, the first area
//!   starts at offset 0, and the NVMe CAP register reads through it ->
//!   `core::nvme_bar0_areas_avoid_the_msix_table`.
//! - Mapping a sparse BAR whole is `Unsupported` ->
//!   `core::whole_region_map_of_a_sparse_bar_is_refused` (skips where BAR0 has no sparse-mmap
//!   capability; README.md says QEMU 7.2 reports the nvme's MSI-X table mappable).
//! - `VFIO_DEVICE_GET_REGION_INFO` past the last region is EINVAL naming the device ->
//!   `core::region_info_of_a_missing_index_is_einval`, `bad_input::region_info_for_index_42`.
//! - BAR access through the mapping agrees with pread (NVMe CAP); reads past the end or misaligned
//!   are refused; MSI-X vector 0 starts masked ->
//!   `pci::bar_access_checks_bounds_and_matches_pread`. The same refusals on a `Bar`
//!   (`InvalidArgument` "past the end", "aligned") -> `bad_input::mmio_past_the_bar_end`,
//!   `bad_input::misaligned_mmio`.
//! - Bulk BAR copies (`write_bytes`, `read_bytes`) reach the registers and agree with pread (only
//!   the low dwords on kernels that split region reads, 6.1); a copy past the end is refused ->
//!   `pci_io::bar_bulk_copy_reaches_registers`, `bad_input::bulk_bar_copy_past_the_end`.
//! - An I/O-port BAR (pci-testdev) is not mmappable (the `Bar` has no mappings, `register` is refused)
//!   and is read and written through pread/pwrite: the device counts the write; past the end and
//!   misaligned are refused -> `pci_io::io_port_bar_reads_and_writes`.
//! - Every implemented BAR of every harness device reads (mmap or pread) ->
//!   `pci::config_matches_sysfs_and_every_bar_reads`.
//! - A BAR pread with memory decoding off in the command register is EIO ->
//!   `bad_input::bar_pread_with_memory_decode_off`.
//! - The edu's option ROM reads whole (55 AA signature, PCIR structure, text, pattern); a device
//!   without a ROM is `Unsupported` -> `pci_io::rom_is_read_whole`,
//!   `bad_input::rom_of_a_device_without_one`.
//! - A BAR mapping keeps its device open: it reads the ID after device and container are dropped ->
//!   `teardown::every_drop_order_{group,cdev,noiommu}`.
//! - One BAR handle (issue #19): edu's BAR0 is one mapping covering the whole BAR; 32- and
//!   64-bit accesses and `Register`s taken from the `Bar` agree with the kernel's pread/pwrite;
//!   past the end and misaligned are refused, for accesses and registers alike ->
//!   `bar_access::edu_bar_mmapped_whole_agrees_with_pread`. NVMe BAR0 at 8/16/32/64 bits, and its
//!   MSI-X table reached at `MsixCap::table_offset` (`u64`) as it is; where the table is mapped,
//!   the kernel's pread of it reads all ones (vfio-pci excludes it from region reads) ->
//!   `bar_access::nvme_bar_widths_and_msix_table`. The I/O-port BAR through pread/pwrite, with
//!   `read64`/`write64` refused (Unsupported: vfio-pci's 8-byte pread of ports is two 32-bit port
//!   reads) and no `Register` handed out -> `bar_access::io_port_bar_through_pread_and_read64_refused`.
//!
//! ## Config space and capabilities
//!
//! - Vendor, device and class ids match sysfs; bus mastering sets and clears; memory decoding stays
//!   on -> `pci::config_matches_sysfs_and_every_bar_reads`.
//! - The status register's `CAPABILITIES_LIST` bit matches the capability walk and its device bits
//!   match sysfs `config`; revision, subsystem ids and header type match sysfs ->
//!   `pci::status_and_header_ids_match_sysfs`.
//! - 8-bit config writes land and read back at 8 and 32 bits; writes to the status register are
//!   dropped -> `pci::config_write8_and_status_writes_dropped`.
//! - The standard and extended capability walks match the device's real config space (sysfs
//!   `config`); the PM capability is in D0 with the device's version; no extended list in 256 bytes
//!   -> `pci::capability_walks_match_sysfs_config`.
//! - The edu has a 1-vector 64-bit MSI capability and no MSI-X -> `pci::edu_capabilities_and_bars`;
//!   the nvme has MSI-X (65 entries, table in BAR0), a PCIe capability and 4 KiB of config space ->
//!   `pci::nvme_capabilities_msix_pcie`.
//! - A virtio device's vendor capabilities name the common, notify, ISR and device structures, each
//!   in an existing BAR -> `pci::virtio_vendor_capabilities`.
//! - Config access past 4 KiB (nvme), or past 256 bytes on conventional PCI (edu), is
//!   `InvalidArgument` naming region 7 -> `bad_input::config_access_past_4k`,
//!   `bad_input::config_access_past_256_on_pci`.
//!
//! ## Device features and power
//!
//! - `VFIO_DEVICE_FEATURE` probe: migration and an unknown feature probe as unsupported; a feature
//!   number above 16 bits is `InvalidArgument` ->
//!   `core::feature_probe_reports_unsupported_as_false`, `bad_input::feature_number_above_16_bits`.
//! - Low-power entry is SET-only (the probe says so): GET is EINVAL, entry while a BAR mapping
//!   is live is `InvalidArgument`, entering twice is EINVAL, entry with a wakeup eventfd works and
//!   eventfd -1 is EINVAL; after the exit a new BAR mapping reads and config space answers ->
//!   `core::low_power_feature_set_and_get_contracts`.
//! - Low power on the edu (issue #17): config space reads in low power, a second entry is
//!   EINVAL, BAR0 maps and answers after the exit; a memfd as the wakeup fd is EINVAL and enters
//!   nothing; the wakeup eventfd is never signalled without runtime PM (7.3 test kernels) and is
//!   by the exit's resume with it (Debian's 6.1); entry with a live mapping is `InvalidArgument`
//!   naming the count, and the mapping still works -> `low_power::enter_and_exit`,
//!   `low_power::enter_with_wakeup_eventfd`, `low_power::entry_refused_while_mmapped`.
//!
//! ## Peer-to-peer DMA (issue #17)
//!
//! edu DMAs into and out of the CMB of `VFIO_TEST_NVME_CMB` (BAR2, 2 MiB, 64-bit prefetchable),
//! read back through the CMB's own mapping byte for byte.
//!
//! - BAR2 is 2 MiB, mmappable, 64-bit prefetchable, and reads back at both ends ->
//!   `p2p::cmb_bar_is_a_2mib_prefetchable_mmap`.
//! - `Device::export_dma_buf` / `PciDevice::export_bar`: the fd is CLOEXEC, its fdinfo says its
//!   size and `exp_name: vfio_pci_core`, mmap of it is EINVAL; two ranges export ->
//!   `p2p::dma_buf_export_contract`; Linux 6.1 says `Unsupported` naming 6.19 and
//!   `CONFIG_VFIO_PCI_DMABUF`, and `PeerMapping` takes the mmap route there ->
//!   `p2p::dma_buf_refused_clearly_without_kernel_support`.
//! - RAM -> edu -> CMB and CMB -> edu -> RAM through a `PeerMapping`, by dma-buf on iommufd (cdev,
//!   compat, no-IOMMU cdev), by the mmap on type1, by the sysfs physical address in a no-IOMMU
//!   group; without an IOMMU the address is BAR2's physical one ->
//!   `p2p::edu_cmb_round_trip_{group,cdev}`.
//! - iommufd revokes an import for good on `VFIO_DEVICE_RESET`, COMMAND.MEM off/on and low-power
//!   entry/exit: the DMA lands nowhere, the IOVA is EEXIST, its unmap works, the same dma-buf
//!   imported again lands -> `p2p::import_revoked_by_reset_{cdev,group}`,
//!   `p2p::import_revoked_by_memory_disable_cdev`, `p2p::low_power_revokes_the_import_cdev`;
//!   after the exporter closed, re-importing is ENODEV and a new export lands ->
//!   `p2p::import_revoked_by_close_cdev`. The type1 mapping of the mmap survives a reset ->
//!   `p2p::type1_bar_mapping_outlives_reset`.
//! - Mapping a BAR's mmap by address on iommufd is EFAULT; `map_mmio_raw` is `Unsupported` there
//!   and `PeerMapping` takes the dma-buf route -> `p2p::bar_mmap_map_is_efault_on_iommufd_{cdev,group}`.
//! - Bad input: a range outside the BAR or not page aligned (`InvalidArgument`; raw EINVAL), an
//!   I/O-port BAR (`InvalidArgument`; raw EINVAL), the config region (`InvalidArgument`; raw
//!   ENODEV), a dma-buf into a type1 container (`Unsupported`), a two-range dma-buf into an IOAS
//!   (`Unsupported` from EOPNOTSUPP, nothing mapped) -> `p2p::bad_dma_buf_*`.
//!
//! ## SR-IOV and VF tokens
//!
//! All on the QEMU nvme PF `VFIO_TEST_NVME_SRIOV` (two VFs); "group"/"cdev" run the IOMMU mode
//! where offered, else the no-IOMMU one.
//!
//! - `SriovVfs::enable(2)` sets a token and `sriov_numvfs` 2: VFs PF.1 and PF.2, on vfio-pci,
//!   8086:5845 class 010802, `physfn` the PF, with a group; `lsvfio` prints `physfn` and
//!   `sriov numvfs 2/totalvfs 2`; dropping the owner sets numvfs 0 and the VFs are gone;
//!   `keep()` leaves them -> `sriov::numvfs_owner_enables_and_restores`.
//! - A VF opens with the token (group: `vf_token=`, cdev: `VFIO_DEVICE_BIND_FLAG_TOKEN`, whose
//!   probe says yes on 7.3): ids 8086:5845, BAR0 16 KiB, CAP 0 and CSTS 0x2 (an offline secondary
//!   controller), a `DmaBuffer` maps in its container, VF reset works; the VFs go with the last
//!   VF -> `sriov::vf_open_with_token_{group,cdev}`.
//! - Without the token or with a wrong one: Kernel EACCES naming the VF, its PF and "missing" or
//!   "wrong" (never the token itself), no fd left, the VF opens with the token afterwards ->
//!   `sriov::vf_open_without_token_is_eacces_{group,cdev}`,
//!   `sriov::vf_open_with_wrong_token_is_eacces_{group,cdev}`.
//! - While a VF is open the PF opens again only with the token: EACCES without; group mode opens
//!   a second fd with it, cdev refuses the second bind with EINVAL ->
//!   `sriov::pf_reopen_while_a_vf_is_open_needs_the_token_{group,cdev}`.
//! - Bad input: numvfs 3 above totalvfs 2 is InvalidArgument (the raw sysfs write ERANGE); with
//!   vfio-pci's `enable_sriov` off, Unsupported naming `vfio_pci.enable_sriov=1` (restored after);
//!   a token on edu's group open is EINVAL ("neither an SR-IOV VF nor a PF"); `set_vf_token` on
//!   edu is ENOTTY ("not an SR-IOV PF"); the same ioeventfd (offset, width, value) twice is EEXIST
//!   saying so, while another value at the same place is accepted ->
//!   `sriov::bad_numvfs_above_totalvfs`, `sriov::bad_sriov_without_enable_sriov`,
//!   `sriov::bad_vf_token_on_a_non_vf_group`, `sriov::bad_set_vf_token_on_a_non_pf`,
//!   `sriov::bad_ioeventfd_registered_twice`.
//!
//! ## Reset and hot reset
//!
//! - `VFIO_DEVICE_RESET` (the nvme offers it) clears the controller configuration ->
//!   `core::nvme_function_reset_clears_registers`, `conformance::nvme_reset@*` (also: CAP still
//!   reads).
//! - `PciDevice::reset` keeps bus mastering and memory decoding ->
//!   `pci::reset_keeps_the_command_register`.
//! - A device on the root bus cannot be hot reset: `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` is ENODEV
//!   naming the device and the reset fails with an errno ->
//!   `core::hot_reset_of_a_root_bus_device_is_enodev`; `PciDevice::hot_reset` is ENODEV ->
//!   `pci::hot_reset_on_the_root_bus_is_enodev`, `bad_input::hot_reset_on_the_root_bus`.
//! - An nvme alone behind a root port hot resets in cdev mode (zero-length form) and group mode:
//!   only it is reported, its registers clear, the command register is restored ->
//!   `pci::hot_reset_behind_a_root_port` (intel boots).
//! - A hot reset through a container that does not own the device is `InvalidArgument` naming it,
//!   and the device is untouched -> `pci::hot_reset_behind_a_root_port`,
//!   `bad_input::hot_reset_without_owning_the_device` (intel boots).
//! - After a process is killed mid-DMA, bus mastering is off when the device reopens; the edu
//!   behind a root port offers `VFIO_DEVICE_RESET`; after reset and idle, DMA works ->
//!   `reliability::killed_dma_child_leaves_the_device_usable`.
//!
//! ## Fd passing and secondary processes
//!
//! - A forked secondary asks the primary for the device over a unix socket (`vfio_core::fdpass`): a
//!   request for something the primary lacks is refused naming it; the device comes with the
//!   container and group fds (group, no-IOMMU) or the iommufd and IOAS id (cdev); the adopted
//!   container has the primary's mode; the child DMAs memory of its own; its IOVA is free again
//!   after it leaves, and the device still works for the primary ->
//!   `secondary::secondary_adopts_passed_fds_and_dmas_its_own_memory` (every mode the kernel
//!   offers).
//! - `send_fds` with no fds is `InvalidArgument` -> `bad_input::fd_message_with_no_fds`.
//! - An iommufd adopted from a duplicate fd is close-on-exec and sees the same objects (the VFIO
//!   compatibility IOAS set through it, the original's mapping) ->
//!   `iommufd_mock::iommufd_adopted_from_fd`.
//! - Adopting a container fd -> `group::container_from_fd`; an IOAS id -> see cdev mode above.
//!
//! ## Teardown and drop orders
//!
//! - Container, device, BAR mapping, DMA mapping and MSI eventfd dropped in each of the 120 orders
//!   give back every fd, memory mapping, locked and pinned page; the device reopens each time and
//!   DMAs at the end -> `teardown::every_drop_order_{group,cdev,noiommu}`.
//! - The test's own permutation helper yields 120 distinct orders ->
//!   `teardown::permutations_are_complete`.
//!
//! ## Leaks, close-on-exec, threads
//!
//! - No fd or memory mapping is left after 10,000 container + open + BAR map + close cycles per
//!   mode (on the variant-A intel and no-IOMMU boots and outside the harness; 1,000 on the other
//!   boots; `VFIO_TEST_CYCLES` overrides) -> `reliability::open_close_cycles_keep_fds_flat`.
//! - A held 4 KiB mapping is charged to `VmLck` or `VmPin`, and after 100,000 map/unmap cycles
//!   (10,000 on the other boots) both are back at their baseline, per mode ->
//!   `reliability::map_unmap_cycles_keep_pinned_memory_flat`.
//! - No fd or memory mapping is left by a refused call -> every `bad_input` case; nor locked or
//!   pinned memory by a teardown -> `teardown::every_drop_order_*`.
//! - Every fd is close-on-exec: with containers, groups, iommufds, devices, eventfds, a memfd
//!   buffer and BAR mappings open, an exec'd child sees only fds 0 to 3 (its stdio and its own
//!   directory) -> `reliability::every_fd_is_cloexec`.
//! - 8 threads map and unmap in one container at once and DMA in turns ->
//!   `reliability::eight_threads_share_one_container` (preferred mode).
//! - The public handles are `Send + Sync`, and those that own a kernel object are neither `Clone`
//!   nor `Copy` -> static assertions at the top of `tests/tests/reliability.rs` (a build error, not
//!   a test line).
//!
//! ## Bad input not listed above
//!
//! - PCI addresses with bad hex, function 8 or too many parts are `InvalidArgument` naming the text
//!   -> `bad_input::address_with_bad_hex`, `bad_input::address_with_function_8`,
//!   `bad_input::address_with_too_many_parts`.
//! - A mode name that is not one is `InvalidArgument` -> `bad_input::unknown_mode_name`.
//! - A device that does not exist is ENOENT naming its address -> `bad_input::nonexistent_device`.
//! - A group node that does not exist, and a sysfs root without the device, are ENOENT naming the
//!   path -> `bad_input::nonexistent_group_node`, `bad_input::fake_sysfs_without_the_device`.
//! - Opening a device as user nobody is EACCES naming the `/dev` node ->
//!   `bad_input::no_permission_as_nobody`.
//!
//! ## iommufd objects on the selftest mock
//!
//! These need a kernel with `CONFIG_IOMMUFD_TEST` (the harness kernels of variants A and B) and
//! skip without it, except `ioas_options` and `vfio_compat_ioas_get_set_clear`, which need only
//! `/dev/iommu`.
//!
//! - IOAS map/unmap contracts -> `iommufd_mock::ioas_overlap_is_eexist`,
//!   `iommufd_mock::ioas_unmap_hole_is_enoent`,
//!   `iommufd_mock::ioas_splitting_a_mapping_is_refused`, `iommufd_mock::ioas_unmap_all`,
//!   `iommufd_mock::ioas_auto_iova_inside_allowed_ranges` (above).
//! - `IOMMU_IOAS_COPY` maps the source's pages in another IOAS, the copy outlives the source
//!   mapping; copying an unmapped source is ENOENT; across iommufds `InvalidArgument` ->
//!   `iommufd_mock::ioas_copy_between_ioases`.
//! - `IOMMU_OPTION`: the RLIMIT mode is per user by default and switches to per process (skips
//!   without `CAP_SYS_RESOURCE`); changing it with objects allocated is EBUSY; huge pages are on by
//!   default and turn off -> `iommufd_mock::ioas_options`.
//! - `IOMMU_IOAS_MAP_FILE` maps part of a memfd (unmap returns its length); past the end of the
//!   memfd is refused -> `iommufd_mock::ioas_map_file_from_memfd` (skips where `Unsupported`).
//! - `IOMMU_GET_HW_INFO` of a mock device: the selftest type and register value, dirty tracking
//!   reported (and not for a `NO_DIRTY` device); an unknown device is ENOENT ->
//!   `iommufd_mock::hw_info_of_mock_device`.
//! - `IOMMU_HWPT_ALLOC` with no flag, nest-parent or dirty tracking gives a HWPT a second device
//!   attaches to; dirty tracking for a `NO_DIRTY` device is `Unsupported`; dirty tracking on a
//!   plain HWPT is `Unsupported` or EINVAL; a HWPT from an unknown IOAS is EINVAL ->
//!   `iommufd_mock::hwpt_alloc_flags`.
//! - HWPT dirty bitmaps -> `iommufd_mock::hwpt_dirty_tracking_reports_written_pages` (above).
//! - `IOMMU_VFIO_IOAS` get, set (to either IOAS) and clear; an IOAS of another iommufd is
//!   `InvalidArgument` -> `iommufd_mock::vfio_compat_ioas_get_set_clear`.
//!
//! ## No-IOMMU
//!
//! - A no-IOMMU group container has the `NoIommu` backend, refuses type1v2 (`InvalidArgument`),
//!   gets the no-IOMMU type once the device opens, has no `VFIO_IOMMU_GET_INFO` (`Unsupported`) and
//!   reports every multiple of the CPU page size as its page sizes (inherent and through the
//!   `Container` trait), DMAs at physical addresses, maps a 64-page buffer only if physically
//!   contiguous (else `Unsupported`), and unmap-all finds nothing once every mapping is dropped ->
//!   `group::noiommu_dma_round_trip` (no-IOMMU boots).
//! - The device checks hold in both no-IOMMU forms -> `conformance::open_id_liveness@noiommu-*`,
//!   `conformance::dma_round_trip_msi@noiommu-*`, `conformance::intx_mask_unmask@noiommu-*`,
//!   `conformance::nvme_reset@noiommu-*`, `conformance::reopen_after_close@noiommu-*`;
//!   `edu::edu_id_and_liveness_noiommu`, `edu::edu_dma_round_trip_with_msi_noiommu`,
//!   `teardown::every_drop_order_noiommu`; the `reliability` loops and `secondary` include the
//!   no-IOMMU mode where the kernel offers it.
//! - Skipped without an IOMMU: `conformance::map_errors@noiommu-*`, the `bad_input` map cases,
//!   `cdev::cdev_replace_attached_ioas_while_mapped`,
//!   `cdev::cdev_dma_through_hwpt_at_kernel_chosen_iova`,
//!   `cdev::cdev_dirty_tracking_sees_device_writes`.
//!
//! ## Soundness: leaked guards and no-IOMMU addresses (issue #14)
//!
//! Each case leaks a guard with `mem::forget`, frees the buffer, maps new memory of another
//! pattern at the freed address, then has the edu read the old device address: it must read the
//! old buffer's bytes (the pages the mapping holds) or have been refused up front.
//!
//! - An IOAS mapping made before the first attach, attached after the buffer was freed (the
//!   safe map is by file, `IOMMU_IOAS_MAP_FILE`, so the attach pins the memfd's pages, not what
//!   the address holds then) -> `soundness::forgotten_guard_before_first_attach_cdev`.
//! - The same after the last device detached (iommufd unpins then, and pins by address again at
//!   the next attach) -> `soundness::forgotten_guard_after_last_detach_cdev`.
//! - Group mode between the first group joining and the first device fd, and after the device fd
//!   closed with the group kept: the type1 driver pins at map time, iommufd's compat container
//!   maps by file -> `soundness::forgotten_guard_before_device_open_group`,
//!   `soundness::forgotten_guard_after_device_closed_group`.
//! - `Ioas::copy_of`: a copy in another IOAS outlives its leaked guard, its unmapped source and
//!   the freed buffer -> `soundness::safe_copy_outlives_its_source`.
//! - No-IOMMU cdev: a map before any device is attached is refused (no physical address yet)
//!   and leaves nothing mapped (unmap: ENOENT); after the attach the device address is
//!   `IOMMU_IOAS_NOIOMMU_GET_PA`'s, not the IOVA, and the device reads the buffer there ->
//!   `soundness::noiommu_cdev_map_before_attach_is_refused`; adopting an IOAS that serves a
//!   no-IOMMU device with IOVA addressing is refused, with physical addressing it maps ->
//!   `soundness::noiommu_ioas_adopted_as_iova_is_refused`.
//! - No-IOMMU group: a leaked guard's page is not handed out again (64 fresh pages, none at its
//!   physical address) and the device still reads the old bytes there ->
//!   `soundness::noiommu_group_forgotten_guard_page_is_not_reused`; a private buffer written
//!   after a `fork` stays at the physical address the device was given (`MADV_DONTFORK`) ->
//!   `soundness::noiommu_group_mapping_survives_fork`.
//!
//! ## `lsvfio doctor` (issue #18)
//!
//! - The machine report matches the boot: kernel 7.3 or 6.1; intel: a VT-d unit capable of and
//!   using interrupt remapping, no IOMMU finding; virtio: a virtio-iommu without remapping, a
//!   `NoInterruptRemapping` warning naming the `allow_unsafe_interrupts` that are on; none: no
//!   real IOMMU (the selftest mock does not count), `NoIommuMode`; modes equal `detect()`, cdev
//!   and its feature-table row exactly on 7.3, `NoCdev` and `KernelTooOld` on 6.1; type1's
//!   `dma_entry_limit` 65535 where type1 is loaded; the 2 MiB pool as `/proc` says; every node
//!   opens for root -> `doctor::machine_matches_the_boot`.
//! - The edu is not blocked, usable in exactly the offered modes, its group's domain is DMA
//!   (intel, strict), DMA or DMA-FQ (virtio), a no-IOMMU group (none) ->
//!   `doctor::edu_is_usable_in_the_offered_modes`.
//! - The non-viable edu is blocked by `GroupNotViable` naming the virtio device on virtio-pci,
//!   and `AcsMissing` names the PCIe-to-PCI bridge above it -> `doctor::non_viable_group_names_the_blocker`
//!   (intel boots).
//! - ACS along the path: the edu behind a root port has one hop, the root port, with its ACS
//!   read from config space; a root-bus device has none -> `doctor::acs_along_the_path`.
//! - A 64 KiB `RLIMIT_MEMLOCK` is `MemlockLow` with the limit -> `doctor::small_memlock_is_reported`.
//! - User nobody gets `NodeNotAccessible` (EACCES) for the group node and the edu blocked; root
//!   gets none -> `doctor::nobody_is_told_about_node_permissions`.
//! - The JSON carries every finding's code and the verdict; without addresses every vfio-pci
//!   device is examined -> `doctor::json_and_text_carry_the_verdicts`; `lsvfio doctor` exits 0
//!   for the edu, 1 for the non-viable edu and for a missing device ->
//!   `doctor::lsvfio_doctor_exit_status`.
//! - With both `allow_unsafe_interrupts` off and no remapping, `NoInterruptRemapping` blocks and
//!   its fix names the parameters -> `doctor::no_remapping_without_unsafe_interrupts_blocks`
//!   (virtio boots); `doctor::explain` of the EPERM that open gets then is that finding alone.
//! - The non-viable edu's refused open (cdev: `VFIO_DEVICE_BIND_IOMMUFD` EPERM) is explained by
//!   `GroupNotViable` naming the virtio device on virtio-pci ->
//!   `doctor::explains_the_refusal_of_a_non_viable_group` (intel boots).
//!
//! ## The suite on any device (issue #18)
//!
//! `any_device` runs on every function in `VFIO_TEST_DEVICE` (in the guest: the edus, nvmes,
//! pci-testdev and the virtio device on vfio-pci), in every offered mode, each in a fresh
//! container; it writes no BAR and reads no BAR byte but the MSI-X table and PBA.
//!
//! - The doctor finds nothing blocking and calls it usable in exactly the offered modes ->
//!   `any_device::doctor_says_usable`.
//! - Device, region and IRQ info: a PCI device with at least 9 regions and 5 IRQ indexes, each
//!   index answering for itself (VGA only on a VGA device, ERR only on PCIe where the kernel
//!   refuses it otherwise); BAR sizes and kinds equal sysfs `resource`, the config region sysfs
//!   `config`; mmappable areas page aligned inside their region; MSI and MSI-X counts equal the
//!   capabilities', INTx at most one line and only with an interrupt pin ->
//!   `any_device::info_regions_and_irqs_in_every_mode`.
//! - Ids, revision, class, header type and subsystem ids through VFIO equal the device's own
//!   config space and sysfs attributes; the capability-list bit matches the walk ->
//!   `any_device::config_space_matches_sysfs`.
//! - Every standard and extended capability lies inside config space, at least as long as its
//!   kind needs, once, and in the device's own list; MSI-X table and PBA inside an implemented
//!   memory BAR, as the device's config space says -> `any_device::capability_walks_stay_inside_config_space`.
//! - Each mmappable BAR maps area by area; the MSI-X vector control words and PBA read ->
//!   `any_device::bar_mmap_and_msix_table_reads`.
//! - memfd (read-write, read-only), anonymous (owned), 2 MiB / 1 GiB hugetlb where reserved and
//!   `DmaPool` buffers map and unmap, the device address is the IOVA (or a physical one without
//!   an IOMMU), and unmapping again is ENOENT -> `any_device::dma_map_unmap_every_buffer_kind`.
//! - MSI and up to 4 MSI-X vectors enable with eventfds, a user-space trigger reaches the
//!   eventfd, MSI-X's enable bit follows, both read disabled after the disable ->
//!   `any_device::msi_and_msix_enable_and_disable`.
//! - After `VFIO_DEVICE_RESET` (where offered) ids, class, header type and capabilities read as
//!   before and the command register is restored -> `any_device::reset_leaves_config_space_sane`.
//! - Holding BARs, MSI(-X), borrowed, owned and pool DMA mappings and dropping them (container
//!   first or last) leaves fds, mappings, VmLck and VmPin at their baseline and no VFIO fd, and
//!   the device opens again in every mode -> `any_device::nothing_left_after_drop`.
//!
//! ## Benchmarks
//!
//! `benches/vfio_bench` (run by `cargo xtask bench`, not by `cargo xtask vm test`; BENCHMARKS.md)
//! prints one `@@BENCH` record per row, named by id and case, in group and cdev mode. A row fails
//! only when its operations fail; a missed goal is a verdict, not a failure. Rows, by id (source
//! function in parentheses):
//!
//! - P1, 4 KiB map + unmap, vfio-rs vs raw ioctl (goal at most 1.01), a noise control of raw vs
//!   raw, and each layer (rustix ioctl, `Container` trait, `DmaMapping`) vs raw -> `P1`
//!   (`dma::p1_p5`, `dma::p1_layers`).
//! - P2, 4 KiB map + unmap vs vfio-ioctls 0.10 (group) or iommufd-ioctls 0.4 (cdev) in the same
//!   kernel container (goal at most 1.00), with both vs raw as references -> `P2` (`dma::p2_group`,
//!   `dma::p2_cdev`).
//! - P3, MMIO read32 of the edu ID and write32 of liveness through `MappedRegion`, `Register` and
//!   `vfio_pci::Bar` vs a raw volatile pointer (goal at most 1.01; fails unless BAR0 reads the edu
//!   ID) -> `P3` (`mmio::p3`).
//! - P4, 1 GiB (or the largest anonymous buffer that fits) map + unmap vs raw (goal at most 1.01);
//!   `DmaBuffer::new_preferred` vs anonymous (goal at least 3x on the type1 driver); 2 MiB and 1
//!   GiB pages vs anonymous (skipped without the pool) -> `P4` (`dma::p4`).
//! - P5, map + unmap per I/O vs `DmaPool::translate` (goal at least 100x; a translation miss fails
//!   the row) -> `P5` (`dma::p1_p5`).
//! - P6, open to ready (container, assign, BAR0 mmap, MSI) vs the bare ioctl sequence (goal at most
//!   1.02); single steps (sysfs lookups, `VFIO_DEVICE_GET_INFO`, `VFIO_DEVICE_GET_REGION_INFO`); a
//!   fresh open vs a forked secondary made ready from passed fds (goal at least 10x; a failing
//!   secondary fails the row), with the MSI eventfd passed or its own; MSI round trip through
//!   `EventFd::read` vs raw `read(2)`, `wait_timeout` vs `read`, MSI on another vCPU vs the same ->
//!   `P6` (`open::p6_open`, `open::p6_step_costs`, `open::p6_secondary`, `mmio::p6_irq`).
//! - X1, 4 KiB map + unmap in a container holding the edu vs one holding the nvme, same mode; X2,
//!   cdev vs group map + unmap from 4 KiB to 1 GiB, anonymous and 2 MiB pages; S1, N = 1 to 4096
//!   separate 4 KiB regions, cdev vs group; S2, creating N containers, cdev vs group, and a map +
//!   unmap in each of N IOASes of one iommufd (the type1 row is always skipped: it needs N devices)
//!   -> `X1`, `X2`, `S1`, `S2` (`scale::x1`, `scale::x2`, `scale::s1`, `scale::s2`; need both modes
//!   and both devices).

pub mod caps;
pub mod child;
pub mod edu;
pub mod fds;
pub mod iommufd_mock;
pub mod iommufd_mock_ops;
pub mod module_param;
pub mod mtty;

pub use child::as_nobody;
pub use fds::{FdSnapshot, Resources};
pub use module_param::ParamGuard;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

/// How a test ended when it did not fail.
#[derive(Debug)]
pub enum Outcome {
    /// It ran and every check held.
    Pass,
    /// It could not run here, and why.
    Skip(String),
}

/// What a test returns.
pub type TestResult = Result<Outcome, Box<dyn std::error::Error>>;

/// A named test.
pub type Test = (&'static str, fn() -> TestResult);

/// Skips with a reason.
pub fn skip(reason: impl Into<String>) -> TestResult {
    Ok(Outcome::Skip(reason.into()))
}

/// Fails with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// The PCI address in `var`, or the reason to skip.
pub fn device_from_env(var: &str) -> Result<vfio_core::PciAddress, String> {
    match std::env::var(var) {
        Ok(s) if !s.is_empty() => s.parse().map_err(|e| format!("{var}: {e}")),
        _ => Err(format!(
            "{var} is not set (no device; run `cargo xtask vm test`, or set it to a device bound to vfio-pci)"
        )),
    }
}

/// Runs `tests` (those whose name contains the first non-flag argument, if any), prints one line
/// each and the summary, and exits non-zero if any failed.
pub fn run(tests: &[Test]) -> ExitCode {
    let boxed: Vec<(String, Box<dyn Fn() -> TestResult>)> = tests
        .iter()
        .map(|&(name, f)| (name.to_string(), Box::new(f) as Box<dyn Fn() -> TestResult>))
        .collect();
    run_named(boxed)
}

/// [`run`] for tests built at run time (e.g. one per mode: `check@mode`).
pub fn run_named(tests: Vec<(String, Box<dyn Fn() -> TestResult>)>) -> ExitCode {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, f) in &tests {
        if filter.as_deref().is_some_and(|flt| !name.contains(flt)) {
            continue;
        }
        let res = catch_unwind(AssertUnwindSafe(f));
        match res {
            Ok(Ok(Outcome::Pass)) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Ok(Ok(Outcome::Skip(why))) => {
                skipped += 1;
                println!("test {name} ... skipped: {why}");
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("test {name} ... FAILED\n    error: {e}");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED (panicked)");
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether the running kernel offers `mode`.
pub fn offered(mode: vfio_core::Mode) -> bool {
    vfio_core::detect().offers(mode)
}

/// The group mode offered here: with an IOMMU, else no-IOMMU; or why there is none.
pub fn group_mode() -> Result<vfio_core::Mode, String> {
    let modes = vfio_core::detect();
    if modes.group {
        Ok(vfio_core::Mode::GROUP)
    } else if modes.group_noiommu {
        Ok(vfio_core::Mode::GROUP_NOIOMMU)
    } else {
        Err(format!("group mode is not offered by this kernel ({modes:?})"))
    }
}

/// The device named by environment variable `var`, when `mode` is offered here; else why the
/// test cannot run.
pub fn device_in(var: &str, mode: vfio_core::Mode) -> Result<vfio_core::PciAddress, String> {
    let addr = device_from_env(var)?;
    if !offered(mode) {
        return Err(format!(
            "{mode} mode is not offered by this kernel ({:?})",
            vfio_core::detect()
        ));
    }
    Ok(addr)
}

/// A fresh container of `mode` of its own (not the process-wide default): dropping it releases
/// every group or device assigned to it.
pub fn new_container(mode: vfio_core::Mode) -> vfio_core::Result<std::sync::Arc<dyn vfio_core::Container>> {
    use std::sync::Arc;
    use vfio_core::{Addressing, Interface};
    Ok(match (mode.interface(), mode.addressing()) {
        (Interface::Group, addressing) => Arc::new(vfio_group::Container::open(addressing)?),
        (Interface::Cdev, Addressing::Iova) => Arc::new(vfio_cdev::Container::new()?),
        (Interface::Cdev, Addressing::Physical) => Arc::new(vfio_cdev::Container::new_noiommu()?),
    })
}

/// [`new_container`], or why `mode` cannot run here (for [`skip`]).
pub fn container_or_reason(mode: vfio_core::Mode) -> Result<std::sync::Arc<dyn vfio_core::Container>, String> {
    if !offered(mode) {
        return Err(format!(
            "{mode} mode is not offered by this kernel ({:?})",
            vfio_core::detect()
        ));
    }
    new_container(mode).map_err(|e| e.to_string())
}

/// The fds this process has open (from `/proc/self/fd`, without the directory's own fd).
pub fn open_fds() -> std::io::Result<Vec<i32>> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort();
    // The last one opened is read_dir's own.
    fds.retain(|&fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok());
    Ok(fds)
}

/// How many memory mappings this process has (`/proc/self/maps` lines).
pub fn mapping_count() -> std::io::Result<usize> {
    Ok(std::fs::read_to_string("/proc/self/maps")?.lines().count())
}

/// A `/proc/self/status` field in kB (e.g. `VmLck`, `VmPin`).
pub fn status_kb(field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0))
}

/// Forks a child that runs `f` and leaves with `_exit`: status 0 when `f` succeeded, 1 when it
/// failed or panicked (saying why on stdout). The child never returns into the test harness, so
/// a failing child cannot go on to run the parent's remaining tests. Returns the child's pid.
///
/// # Safety
/// The calling process must have no other threads (fork(2) copies only the caller's), and `f`
/// must not rely on state another thread would have held a lock on.
pub unsafe fn fork_child(f: impl FnOnce() -> Result<(), Box<dyn std::error::Error>>) -> Result<i32, String> {
    // SAFETY: the caller guarantees a single-threaded process; the child ends in _exit below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                println!("    child: {e}");
                1
            }
            Err(_) => {
                println!("    child: panicked");
                1
            }
        };
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: ends the forked child without running the parent's destructors or atexit
        // handlers, as fork(2) requires.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

/// Waits for child `pid`; an error unless it exited with status 0.
pub fn wait_child(pid: i32) -> Result<(), String> {
    let mut status = 0;
    // SAFETY: waits for a child of this process; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    if waited != pid {
        return Err(format!("waitpid({pid}): {}", std::io::Error::last_os_error()));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("child {pid} failed (wait status {status:#x})"))
    }
}
