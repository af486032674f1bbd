//! A slot's ring buffer, read in place through windows mapped only as the records reach them.
//!
//! The kernel maps every page of a BPF ring buffer when it is mmapped (`remap_vmalloc_range`),
//! and its data area twice over (a record that wraps reads as one slice): for a `full` slot's
//! 4 MiB that was 2,050 pages mapped at each launch and unmapped at its end, ~1.8 ms of CPU
//! (perf, issue 19), most of them never read by a short run. Here the two position pages are
//! mapped at once and the data area's address range is only reserved; a window of it is
//! mapped (from the same file offsets, so the layout is the kernel's) the first time a record
//! lies in it. A run that writes 20 KB of records maps one window.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::maps::MapData;

/// Bytes mapped at a time (32 pages).
const WINDOW: usize = 128 << 10;
/// A record's header: its length with two flag bits, then the page offset the kernel uses.
const HEADER: usize = 8;
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;

pub struct Ring {
    /// The ring buffer map (or, in tests, a file laid out like one).
    file: Box<dyn AsFd + Send>,
    /// The data area's length (a power of two; it appears twice in the file, back to back).
    size: usize,
    page: usize,
    consumer: Mapping,
    producer: Mapping,
    /// `2 * size` bytes reserved (no access) for the data area's two copies; windows are
    /// mapped over it in place.
    area: Mapping,
    mapped: Vec<bool>,
    /// Where the next record starts (the consumer position, published after each record).
    pos: u64,
    /// The record `next` returned last: consumed (published) at the next call.
    taken: Option<u64>,
}

// The mappings are only read (or, for the consumer position, written) through the Ring.
// SAFETY: the Ring owns its mappings; moving it to another thread moves that ownership.
unsafe impl Send for Ring {}

impl Ring {
    /// Map the ring's positions; records are read from the consumer position on (nothing of
    /// the data is mapped yet).
    pub fn open(map: MapData) -> io::Result<Ring> {
        let size =
            usize::try_from(map.info().map_err(io::Error::other)?.max_entries()).map_err(io::Error::other)?;
        Ring::with_file(Box::new(MapFile(map)), size)
    }

    fn with_file(file: Box<dyn AsFd + Send>, size: usize) -> io::Result<Ring> {
        let page = page_size();
        if !size.is_power_of_two() || size < page {
            return Err(io::Error::other(format!("a ring buffer of {size} bytes")));
        }
        let fd = file.as_fd().as_raw_fd();
        let consumer = Mapping::file(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::file(fd, page, libc::PROT_READ, page)?;
        let area = Mapping::reserve(2 * size)?;
        let mut ring = Ring {
            file,
            size,
            page,
            consumer,
            producer,
            area,
            mapped: vec![false; (2 * size).div_ceil(WINDOW)],
            pos: 0,
            taken: None,
        };
        ring.pos = ring.consumer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // The kernel keeps the position at the page's start, 8-byte aligned.
        // SAFETY: the consumer page stays mapped (read-write) for as long as `self`.
        unsafe { &*self.consumer.ptr.cast::<AtomicU64>() }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above, for the producer page (read-only).
        unsafe { &*self.producer.ptr.cast::<AtomicU64>() }
    }

    /// Give back the space of the record returned last.
    fn commit(&mut self) {
        if let Some(next) = self.taken.take() {
            self.pos = next;
            self.consumer_pos().store(next, Ordering::Release);
        }
    }

    /// Records left by an earlier owner of the slot: passed over unread.
    pub fn skip_unread(&mut self) {
        self.taken = None;
        self.pos = self.producer_pos().load(Ordering::Acquire);
        self.consumer_pos().store(self.pos, Ordering::Release);
    }

    /// Map the windows over `[from, to)` of the data area that are not mapped yet.
    fn reach(&mut self, from: usize, to: usize) -> io::Result<()> {
        for w in from / WINDOW..to.div_ceil(WINDOW) {
            if self.mapped[w] {
                continue;
            }
            let len = WINDOW.min(2 * self.size - w * WINDOW);
            let fd = self.file.as_fd().as_raw_fd();
            // MAP_FIXED replaces only part of that reservation; the file range is the ring's
            // data (both copies), which the kernel maps read-only.
            // SAFETY: the target lies inside `area`, which this Ring reserved and owns.
            let got = unsafe {
                libc::mmap(
                    self.area.ptr.add(w * WINDOW).cast(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    libc::off_t::try_from(2 * self.page + w * WINDOW).map_err(io::Error::other)?,
                )
            };
            if got == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            self.mapped[w] = true;
        }
        Ok(())
    }

    /// The next whole record, or None when none is ready. A record is consumed when `next` is
    /// called again (or the ring dropped with it unconsumed: the next owner passes over it).
    pub fn next(&mut self) -> Option<&[u8]> {
        self.commit();
        loop {
            if self.pos >= self.producer_pos().load(Ordering::Acquire) {
                return None;
            }
            // Masked: an offset in the first copy, so a record read from it ends in the second.
            let off = usize::try_from(self.pos).ok()? & (self.size - 1);
            self.reach(off, off + HEADER).unwrap_or_else(|e| unmappable(&e));
            // The kernel publishes the length with a release store.
            // SAFETY: the header's 8 bytes are mapped (just above) and 8-byte aligned.
            let word = unsafe { &*self.area.ptr.add(off).cast::<AtomicU32>() }.load(Ordering::Acquire);
            if word & BUSY != 0 {
                return None;
            }
            let len = (word & !(BUSY | DISCARD)) as usize;
            let stride = (HEADER + len).next_multiple_of(8) as u64;
            if word & DISCARD != 0 {
                self.taken = Some(self.pos + stride);
                self.commit();
                continue;
            }
            self.reach(off + HEADER, off + HEADER + len)
                .unwrap_or_else(|e| unmappable(&e));
            self.taken = Some(self.pos + stride);
            // Both copies follow each other and a record is shorter than the ring; the busy
            // bit is clear, so the kernel is done writing it.
            // SAFETY: `len` bytes after the header are mapped and stay so while `self` is borrowed.
            return Some(unsafe { std::slice::from_raw_parts(self.area.ptr.add(off + HEADER), len) });
        }
    }

    /// Windows mapped so far (for tests).
    #[cfg(test)]
    fn windows(&self) -> usize {
        self.mapped.iter().filter(|m| **m).count()
    }
}

/// A window of the ring that cannot be mapped (address space or memory exhausted) leaves its
/// records unreadable: the reader stops with the reason, and the session's fuse freezes and
/// kills the sandbox and seals the trace with it (fail closed, nothing lost silently).
fn unmappable(e: &io::Error) -> ! {
    panic!("a window of the ring buffer cannot be mapped: {e}")
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.commit();
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// The map, by its descriptor.
struct MapFile(MapData);

impl AsFd for MapFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd().as_fd()
    }
}

/// One mmap, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn file(fd: i32, len: usize, prot: i32, offset: usize) -> io::Result<Mapping> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a new shared mapping at an address the kernel picks: nothing refers to it.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, offset) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    /// Address space only: no access, no memory behind it.
    fn reserve(len: usize) -> io::Result<Mapping> {
        // SAFETY: as above, anonymous and inaccessible.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: this mapping (and the windows mapped over it) belongs to `self` alone.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const SIZE: usize = 512 << 10;

    /// A file laid out as the kernel lays out a ring buffer for mmap: the consumer position's
    /// page, the producer position's, then the data area twice.
    struct Fake {
        file: std::fs::File,
        page: usize,
    }

    impl Fake {
        fn new(pos: u64) -> Fake {
            let fd = nix::sys::memfd::memfd_create(c"ring-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .expect("memfd");
            let file = std::fs::File::from(fd);
            let page = page_size();
            file.set_len((2 * page + 2 * SIZE) as u64).unwrap();
            let f = Fake { file, page };
            f.file.write_all_at(&pos.to_le_bytes(), 0).unwrap();
            f.file.write_all_at(&pos.to_le_bytes(), page as u64).unwrap();
            f
        }

        /// Write a record at `pos` (in both copies, as the double mapping shows it); the new
        /// producer position.
        fn put(&self, pos: u64, flags: u32, body: &[u8]) -> u64 {
            let mut rec = (u32::try_from(body.len()).unwrap() | flags)
                .to_le_bytes()
                .to_vec();
            rec.extend_from_slice(&[0; 4]);
            rec.extend_from_slice(body);
            let off = usize::try_from(pos).unwrap() % SIZE;
            for (i, b) in rec.iter().enumerate() {
                let at = (off + i) % SIZE;
                for copy in [at, at + SIZE] {
                    self.file
                        .write_all_at(&[*b], (2 * self.page + copy) as u64)
                        .unwrap();
                }
            }
            let next = pos + (8 + body.len()).next_multiple_of(8) as u64;
            self.file
                .write_all_at(&next.to_le_bytes(), self.page as u64)
                .unwrap();
            next
        }

        fn consumer(&self) -> u64 {
            let mut b = [0; 8];
            self.file.read_exact_at(&mut b, 0).unwrap();
            u64::from_le_bytes(b)
        }

        fn ring(&self) -> Ring {
            Ring::with_file(Box::new(self.file.try_clone().unwrap()), SIZE).unwrap()
        }
    }

    #[test]
    fn records_are_read_in_order_with_discarded_ones_passed_over() {
        let f = Fake::new(1000 * 8);
        let mut p = f.put(8000, 0, b"first");
        p = f.put(p, DISCARD, b"thrown away");
        p = f.put(p, 0, &[7; 300]);
        let mut ring = f.ring();
        assert_eq!(ring.next(), Some(&b"first"[..]));
        // The first record is consumed (its space given back) only when the next is asked for.
        assert_eq!(f.consumer(), 8000);
        assert_eq!(ring.next(), Some(&[7u8; 300][..]));
        assert_eq!(ring.next(), None);
        assert_eq!(f.consumer(), p);
        // A short run's records lie in one window: the rest of the data area is not mapped.
        assert_eq!(ring.windows(), 1);
    }

    #[test]
    fn a_record_that_wraps_reads_whole_from_the_second_copy() {
        let start = (3 * SIZE - 16) as u64; // 16 bytes before the data area's end, third lap
        let f = Fake::new(start);
        let body: Vec<u8> = (0..200u8).collect();
        let end = f.put(start, 0, &body);
        let mut ring = f.ring();
        assert_eq!(ring.next(), Some(&body[..]));
        assert_eq!(ring.next(), None);
        assert_eq!(f.consumer(), end);
        // The last window of the first copy and the first of the second.
        assert_eq!(ring.windows(), 2);
    }

    #[test]
    fn a_record_still_being_written_stops_the_reading() {
        let f = Fake::new(0);
        let p = f.put(0, BUSY, b"not yet");
        let mut ring = f.ring();
        assert_eq!(ring.next(), None);
        assert_eq!(f.consumer(), 0);
        // An earlier owner's unread records are passed over without reading them.
        ring.skip_unread();
        assert_eq!(f.consumer(), p);
        assert_eq!(ring.windows(), 1);
    }
}
