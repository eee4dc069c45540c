//! virtio-blk: feature bits, configuration space, request parsing.

pub mod config;
pub mod request;

#[cfg(test)]
mod request_tests;

impl request::SegView for ferrite_vring::Segment {
    #[inline]
    fn addr(&self) -> u64 {
        self.addr
    }
    #[inline]
    fn len(&self) -> u32 {
        self.len
    }
    #[inline]
    fn writable(&self) -> bool {
        self.device_writable
    }
}
