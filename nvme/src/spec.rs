//! NVMe data structures: submission and completion queue entries, opcodes, command builders
//! and status codes decoded to their names (NVMe Base Specification 2.0).

/// A submission queue entry (64 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Sqe {
    /// Opcode (bits 0-7), fused operation (8-9), PSDT (14-15), command identifier (16-31).
    pub cdw0: u32,
    /// Namespace identifier.
    pub nsid: u32,
    /// Reserved (CDW2-3).
    pub cdw2: [u32; 2],
    /// Metadata pointer.
    pub mptr: u64,
    /// PRP entry 1 (data pointer).
    pub prp1: u64,
    /// PRP entry 2 (data pointer or PRP list pointer).
    pub prp2: u64,
    /// Command dwords 10-15.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
}

const _: () = assert!(std::mem::size_of::<Sqe>() == 64);

impl Sqe {
    /// An entry with the opcode and namespace set.
    pub fn new(opc: u8, nsid: u32) -> Self {
        Self {
            cdw0: opc as u32,
            nsid,
            ..Self::default()
        }
    }
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        (self.cdw0 & 0xff) as u8
    }
    /// The command identifier.
    pub fn cid(&self) -> u16 {
        (self.cdw0 >> 16) as u16
    }
    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.cdw0 = (self.cdw0 & 0xffff) | ((cid as u32) << 16);
    }
    /// The fused-operation field (0 normal, 1 first, 2 second).
    pub fn fuse(&self) -> u8 {
        ((self.cdw0 >> 8) & 3) as u8
    }
    /// Sets the fused-operation field.
    pub fn set_fuse(&mut self, f: u8) {
        self.cdw0 = (self.cdw0 & !(3 << 8)) | (((f & 3) as u32) << 8);
    }
    /// Starting LBA (CDW10-11) of an I/O command.
    pub fn slba(&self) -> u64 {
        self.cdw10 as u64 | ((self.cdw11 as u64) << 32)
    }
    /// Number of logical blocks (0-based field + 1) of an I/O command.
    pub fn nlb(&self) -> u32 {
        (self.cdw12 & 0xffff) + 1
    }
}

/// A completion queue entry (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Cqe {
    /// Command specific (DW0).
    pub dw0: u32,
    /// Reserved (DW1).
    pub dw1: u32,
    /// SQ head pointer (bits 0-15) and SQ identifier (16-31).
    pub sq: u32,
    /// Command identifier (bits 0-15), phase (16), status (17-31).
    pub status_cid: u32,
}

const _: () = assert!(std::mem::size_of::<Cqe>() == 16);

impl Cqe {
    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.status_cid as u16
    }
    /// Phase tag.
    pub fn phase(&self) -> bool {
        self.status_cid & (1 << 16) != 0
    }
    /// The status field (without the phase bit).
    pub fn status(&self) -> Status {
        Status((self.status_cid >> 17) as u16)
    }
    /// Submission queue head as the controller saw it.
    pub fn sq_head(&self) -> u16 {
        self.sq as u16
    }
    /// Submission queue the command came from.
    pub fn sq_id(&self) -> u16 {
        (self.sq >> 16) as u16
    }
}

/// Admin command opcodes.
pub mod admin {
    /// Delete I/O Submission Queue.
    pub const DELETE_SQ: u8 = 0x00;
    /// Create I/O Submission Queue.
    pub const CREATE_SQ: u8 = 0x01;
    /// Delete I/O Completion Queue.
    pub const DELETE_CQ: u8 = 0x04;
    /// Create I/O Completion Queue.
    pub const CREATE_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0a;
}

/// NVM command set opcodes.
pub mod io {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DSM: u8 = 0x09;
}

/// Feature identifier: Number of Queues.
pub const FEAT_NUM_QUEUES: u8 = 0x07;
/// Identify CNS: namespace.
pub const CNS_NS: u8 = 0x00;
/// Identify CNS: controller.
pub const CNS_CTRLR: u8 = 0x01;
/// Identify CNS: active namespace ID list.
pub const CNS_ACTIVE_NS: u8 = 0x02;
/// Identify CNS: namespace identification descriptor list.
pub const CNS_NS_DESC: u8 = 0x03;

/// Builds a Read or Write (`opc`) of `nlb` blocks (1..=65536) at `slba`.
pub fn rw(opc: u8, nsid: u32, slba: u64, nlb: u32) -> Sqe {
    let mut c = Sqe::new(opc, nsid);
    c.cdw10 = slba as u32;
    c.cdw11 = (slba >> 32) as u32;
    c.cdw12 = nlb.saturating_sub(1) & 0xffff;
    c
}

/// Builds a Flush.
pub fn flush(nsid: u32) -> Sqe {
    Sqe::new(io::FLUSH, nsid)
}

/// Builds a Write Zeroes of `nlb` blocks at `slba` (deallocate allowed when DEAC is set).
pub fn write_zeroes(nsid: u32, slba: u64, nlb: u32) -> Sqe {
    rw(io::WRITE_ZEROES, nsid, slba, nlb)
}

/// Builds a Compare of `nlb` blocks at `slba`; data pointers to be set.
pub fn compare(nsid: u32, slba: u64, nlb: u32) -> Sqe {
    rw(io::COMPARE, nsid, slba, nlb)
}

/// Builds a Dataset Management (deallocate) of `nr` ranges (1..=256); the range list (16 bytes
/// per range, see [`DsmRange`]) is the command's data.
pub fn dsm_deallocate(nsid: u32, nr: u32) -> Sqe {
    let mut c = Sqe::new(io::DSM, nsid);
    c.cdw10 = nr.saturating_sub(1) & 0xff;
    c.cdw11 = 1 << 2; // AD: attribute deallocate
    c
}

/// One Dataset Management range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DsmRange {
    /// Context attributes.
    pub attrs: u32,
    /// Length in logical blocks.
    pub nlb: u32,
    /// Starting LBA.
    pub slba: u64,
}

/// Builds the fused pair Compare (first) + Write (second) for an atomic compare-and-write.
pub fn compare_and_write(nsid: u32, slba: u64, nlb: u32) -> (Sqe, Sqe) {
    let mut c = compare(nsid, slba, nlb);
    c.set_fuse(1);
    let mut w = rw(io::WRITE, nsid, slba, nlb);
    w.set_fuse(2);
    (c, w)
}

/// Builds an Identify with `cns` (and `nsid` where it applies).
pub fn identify(cns: u8, nsid: u32) -> Sqe {
    let mut c = Sqe::new(admin::IDENTIFY, nsid);
    c.cdw10 = cns as u32;
    c
}

/// Builds Set Features / Number of Queues asking for `n` submission and `n` completion queues.
pub fn set_num_queues(n: u16) -> Sqe {
    let mut c = Sqe::new(admin::SET_FEATURES, 0);
    c.cdw10 = FEAT_NUM_QUEUES as u32;
    let v = n.saturating_sub(1) as u32;
    c.cdw11 = v | (v << 16);
    c
}

/// Builds Create I/O Completion Queue `qid` of `size` entries at `iova` (physically
/// contiguous, interrupts disabled).
pub fn create_cq(qid: u16, size: u16, iova: u64) -> Sqe {
    let mut c = Sqe::new(admin::CREATE_CQ, 0);
    c.prp1 = iova;
    c.cdw10 = qid as u32 | ((size as u32 - 1) << 16);
    c.cdw11 = 1; // PC
    c
}

/// Builds Create I/O Submission Queue `qid` of `size` entries at `iova`, completing to CQ `cqid`.
pub fn create_sq(qid: u16, size: u16, iova: u64, cqid: u16) -> Sqe {
    let mut c = Sqe::new(admin::CREATE_SQ, 0);
    c.prp1 = iova;
    c.cdw10 = qid as u32 | ((size as u32 - 1) << 16);
    c.cdw11 = 1 | ((cqid as u32) << 16); // PC
    c
}

/// Builds Delete I/O Submission (`sq`) or Completion queue `qid`.
pub fn delete_queue(sq: bool, qid: u16) -> Sqe {
    let mut c = Sqe::new(
        if sq {
            admin::DELETE_SQ
        } else {
            admin::DELETE_CQ
        },
        0,
    );
    c.cdw10 = qid as u32;
    c
}

/// Builds Abort of command `cid` on submission queue `sqid`.
pub fn abort(sqid: u16, cid: u16) -> Sqe {
    let mut c = Sqe::new(admin::ABORT, 0);
    c.cdw10 = sqid as u32 | ((cid as u32) << 16);
    c
}

/// A completion status: the 15-bit status field (SC bits 0-7, SCT 8-10, CRD 11-12, More 13,
/// DNR 14).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

/// Status code types.
pub mod sct {
    /// Generic command status.
    pub const GENERIC: u8 = 0;
    /// Command specific status.
    pub const COMMAND_SPECIFIC: u8 = 1;
    /// Media and data integrity errors.
    pub const MEDIA: u8 = 2;
    /// Path related status.
    pub const PATH: u8 = 3;
    /// Vendor specific.
    pub const VENDOR: u8 = 7;
}

impl Status {
    /// Success.
    pub const SUCCESS: Status = Status(0);
    /// Generic / Command Abort Requested (set for commands the driver aborts).
    pub const ABORT_REQUESTED: Status = Status(0x07);
    /// Generic / Command Aborted due to SQ Deletion (set for commands failed by a reset).
    pub const ABORTED_SQ_DELETION: Status = Status(0x08);
    /// Generic / Aborted due to failed fused command.
    pub const ABORTED_FAILED_FUSED: Status = Status(0x09);
    /// Generic / Invalid Field in Command.
    pub const INVALID_FIELD: Status = Status(0x02);
    /// Generic / Internal Error.
    pub const INTERNAL: Status = Status(0x06);
    /// Generic / LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: Status = Status(0x80);
    /// Media / Compare Failure.
    pub const COMPARE_FAILURE: Status = Status((2 << 8) | 0x85);
    /// Generic / Invalid Command Opcode.
    pub const INVALID_OPCODE: Status = Status(0x01);

    /// Builds a status from its type and code.
    pub const fn new(sct: u8, sc: u8) -> Self {
        Status(((sct as u16 & 7) << 8) | sc as u16)
    }
    /// Status code.
    pub fn sc(self) -> u8 {
        self.0 as u8
    }
    /// Status code type.
    pub fn sct(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }
    /// Do Not Retry.
    pub fn dnr(self) -> bool {
        self.0 & (1 << 14) != 0
    }
    /// True for success (SCT 0, SC 0).
    pub fn is_success(self) -> bool {
        self.sct() == 0 && self.sc() == 0
    }
    /// The status without the More/DNR/CRD bits, for comparison.
    pub fn code(self) -> Status {
        Status(self.0 & 0x7ff)
    }
    /// The specification's name of the status ("LBA Out of Range", "Compare Failure", ...).
    pub fn name(self) -> &'static str {
        match (self.sct(), self.sc()) {
            (0, 0x00) => "Successful Completion",
            (0, 0x01) => "Invalid Command Opcode",
            (0, 0x02) => "Invalid Field in Command",
            (0, 0x03) => "Command ID Conflict",
            (0, 0x04) => "Data Transfer Error",
            (0, 0x05) => "Commands Aborted due to Power Loss Notification",
            (0, 0x06) => "Internal Error",
            (0, 0x07) => "Command Abort Requested",
            (0, 0x08) => "Command Aborted due to SQ Deletion",
            (0, 0x09) => "Command Aborted due to Failed Fused Command",
            (0, 0x0a) => "Command Aborted due to Missing Fused Command",
            (0, 0x0b) => "Invalid Namespace or Format",
            (0, 0x0c) => "Command Sequence Error",
            (0, 0x0d) => "Invalid SGL Segment Descriptor",
            (0, 0x0f) => "Invalid Number of SGL Descriptors",
            (0, 0x10) => "Data SGL Length Invalid",
            (0, 0x13) => "PRP Offset Invalid",
            (0, 0x15) => "Operation Denied",
            (0, 0x19) => "Invalid SGL Offset",
            (0, 0x1c) => "Namespace is Write Protected",
            (0, 0x80) => "LBA Out of Range",
            (0, 0x81) => "Capacity Exceeded",
            (0, 0x82) => "Namespace Not Ready",
            (0, 0x83) => "Reservation Conflict",
            (0, 0x84) => "Format In Progress",
            (1, 0x00) => "Completion Queue Invalid",
            (1, 0x01) => "Invalid Queue Identifier",
            (1, 0x02) => "Invalid Queue Size",
            (1, 0x03) => "Abort Command Limit Exceeded",
            (1, 0x05) => "Asynchronous Event Request Limit Exceeded",
            (1, 0x0d) => "Feature Identifier Not Saveable",
            (1, 0x0e) => "Feature Not Changeable",
            (1, 0x0f) => "Feature Not Namespace Specific",
            (1, 0x80) => "Conflicting Attributes",
            (1, 0x81) => "Invalid Protection Information",
            (1, 0x82) => "Attempted Write to Read Only Range",
            (2, 0x80) => "Write Fault",
            (2, 0x81) => "Unrecovered Read Error",
            (2, 0x82) => "End-to-end Guard Check Error",
            (2, 0x83) => "End-to-end Application Tag Check Error",
            (2, 0x84) => "End-to-end Reference Tag Check Error",
            (2, 0x85) => "Compare Failure",
            (2, 0x86) => "Access Denied",
            (2, 0x87) => "Deallocated or Unwritten Logical Block",
            (3, 0x00) => "Internal Path Error",
            (3, 0x71) => "Controller Pathing Error",
            (_, _) => "Unknown Status",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (SCT {:#x} SC {:#04x}{})",
            self.name(),
            self.sct(),
            self.sc(),
            if self.dnr() { ", DNR" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_and_fields() {
        let s = Status((1 << 14) | (2 << 8) | 0x85);
        assert_eq!(s.sct(), 2);
        assert_eq!(s.sc(), 0x85);
        assert!(s.dnr());
        assert_eq!(s.name(), "Compare Failure");
        assert_eq!(s.code(), Status::COMPARE_FAILURE);
        assert_eq!(
            s.to_string(),
            "Compare Failure (SCT 0x2 SC 0x85, DNR)".to_string()
        );
        assert_eq!(Status::LBA_OUT_OF_RANGE.name(), "LBA Out of Range");
        assert_eq!(Status::new(7, 0xc0).name(), "Unknown Status");
    }

    #[test]
    fn builders() {
        let c = rw(io::READ, 1, 0x1_0000_0002, 8);
        assert_eq!(c.slba(), 0x1_0000_0002);
        assert_eq!(c.nlb(), 8);
        let (a, b) = compare_and_write(1, 4, 1);
        assert_eq!((a.fuse(), b.fuse()), (1, 2));
        assert_eq!((a.opcode(), b.opcode()), (io::COMPARE, io::WRITE));
        let mut s = set_num_queues(4);
        assert_eq!(s.cdw11, 3 | (3 << 16));
        s.set_cid(0xabcd);
        assert_eq!(s.cid(), 0xabcd);
        assert_eq!(s.opcode(), admin::SET_FEATURES);
        let q = create_sq(3, 256, 0x1000, 3);
        assert_eq!(q.cdw10, 3 | (255 << 16));
    }
}
