//! The machine around the device: sysfs, `/dev` nodes, which modes the kernel offers, PCI
//! addresses, eventfds, and passing fds between processes.

mod device_ref;
pub mod doctor;
mod eventfd;
#[cfg(feature = "tokio")]
mod eventfd_async;
mod fdpass;
pub mod mdev;
mod mode;
mod named_fd;
mod node;
mod pci_address;
mod sriov;
mod sysfs;
mod uuid;

pub use device_ref::DeviceRef;
pub use eventfd::EventFd;
#[cfg(feature = "tokio")]
pub use eventfd_async::AsyncEventFd;
pub use fdpass::{
    FdKind, FdRequest, MAX_FDS, SharedFd, recv_fds, recv_request, request, send_fds, send_refusal, send_request,
};
pub use mdev::{Mdev, MdevParent, MdevType, mdev_parents};
pub use mode::{Addressing, Interface, MODE_ENV, Mode, Modes, detect, detect_in, preferred};
pub use named_fd::NamedFd;
pub use node::open_node;
pub use pci_address::PciAddress;
pub use sriov::{SriovVfs, explain_vf_token_refusal};
pub use sysfs::{CdevNode, PciIdentity, Sysfs};
pub use uuid::Uuid;
