//! A validated descriptor chain, held in a fixed array so that popping one never allocates.

/// Most descriptors accepted in one chain (after following an indirect table): 256 data
/// segments plus a virtio-blk request header and status byte. A vhost-user-blk target must
/// advertise `seg_max <= MAX_SEGS - 2`; a longer chain is reported as
/// [`crate::ChainDefect::TooLong`].
pub const MAX_SEGS: usize = 258;

/// One buffer of a chain: a guest-physical range the device reads (driver → device) or writes
/// (device → driver). Its range has been checked to lie in guest memory when it was popped;
/// access it through the same [`crate::GuestMemory`] with vm-memory's checked accessors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes, never zero.
    pub len: u32,
    /// The device writes this buffer (VIRTQ_DESC_F_WRITE).
    pub device_writable: bool,
}

/// One descriptor chain popped from a ring: its id and its segments, device-readable ones
/// first. Reused from request to request: [`crate::Vring::pop`] overwrites it.
#[derive(Clone)]
pub struct Chain {
    pub(crate) id: u16,
    pub(crate) count: u16,
    /// Packed ring: descriptors the chain occupies in the descriptor ring (an indirect chain
    /// occupies one). Split ring: unused (1).
    pub(crate) ndesc: u16,
    pub(crate) segs: [Segment; MAX_SEGS],
    /// Host address of each segment's first byte in the memory it was popped from (0: the
    /// segment spans two regions). Addresses, not pointers: nothing here dereferences them.
    pub(crate) hosts: [usize; MAX_SEGS],
}

impl Chain {
    /// An empty chain (id 0, no segments).
    pub fn new() -> Self {
        Chain {
            id: 0,
            count: 0,
            ndesc: 0,
            segs: [Segment::default(); MAX_SEGS],
            hosts: [0; MAX_SEGS],
        }
    }

    /// The chain's id to give back to [`crate::Vring::push_used`]: for a split ring the head
    /// descriptor's index, for a packed ring the buffer id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The segments, in chain order (device-readable before device-writable).
    pub fn segments(&self) -> &[Segment] {
        &self.segs[..self.count as usize]
    }

    /// Where segment `i` lies in this process: the host address of its first byte in the
    /// [`crate::GuestMemory`] the chain was popped from, found by the walk that checked the
    /// segment, so that the caller needs no second lookup. `None` if `i` is not a segment of
    /// the chain or the segment spans two regions (translate it piecewise then). The whole
    /// segment (`len` bytes from there) lies in one mapped region of that memory; the address
    /// is valid for as long as that memory stays mapped, and the bytes are guest-shared memory
    /// (access them as such: volatile or atomic, or copies the guest may race with).
    #[inline]
    pub fn host_addr(&self, i: usize) -> Option<*mut u8> {
        if i >= usize::from(self.count) {
            return None;
        }
        let h = self.hosts[i];
        (h != 0).then_some(h as *mut u8)
    }

    /// Total bytes of the device-readable segments.
    pub fn readable_len(&self) -> u64 {
        self.segments()
            .iter()
            .filter(|s| !s.device_writable)
            .map(|s| u64::from(s.len))
            .sum()
    }

    /// Total bytes of the device-writable segments.
    pub fn writable_len(&self) -> u64 {
        self.segments()
            .iter()
            .filter(|s| s.device_writable)
            .map(|s| u64::from(s.len))
            .sum()
    }

    pub(crate) fn reset(&mut self, id: u16) {
        self.id = id;
        self.count = 0;
        self.ndesc = 1;
    }
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("id", &self.id)
            .field("segments", &self.segments())
            .finish()
    }
}
