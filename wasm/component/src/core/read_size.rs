//! How much to ask for on the next read of a connection (hyper's adaptive read
//! strategy): a buffer that filled up doubles the next one, two short reads in a row
//! halve it. An idle connection's pending read is therefore small — it holds its
//! buffer for as long as the connection sits in the pool — while a large body is read
//! in large chunks.

/// Smallest read: what an idle connection's pending read holds. 1 KiB holds a
/// small response whole; larger ones double it at once. (4 KiB cost 6 KiB more per
/// idle connection, measured with 1 000 of them, for no speed gained.)
pub const MIN: usize = 1024;
/// Largest read.
pub const MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSize {
    next: usize,
    /// The previous read was short too.
    shrinking: bool,
}

impl Default for ReadSize {
    fn default() -> Self {
        Self {
            next: MIN,
            shrinking: false,
        }
    }
}

impl ReadSize {
    /// Bytes to ask for now.
    pub fn next(&self) -> usize {
        self.next
    }

    /// Records that a read of `self.next()` bytes returned `got`.
    pub fn record(&mut self, got: usize) {
        if got >= self.next {
            self.next = (self.next * 2).min(MAX);
            self.shrinking = false;
        } else if got <= self.next / 2 {
            if self.shrinking {
                self.next = (self.next / 2).max(MIN);
                self.shrinking = false;
            } else {
                self.shrinking = true;
            }
        } else {
            self.shrinking = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_on_full_reads_and_shrinks_after_two_short_ones() {
        let mut size = ReadSize::default();
        assert_eq!(size.next(), MIN);
        for expected in [2, 4, 8, 16, 32, 64, 64] {
            size.record(size.next());
            assert_eq!(size.next(), expected * 1024);
        }
        size.record(100);
        assert_eq!(size.next(), MAX, "one short read is not enough");
        size.record(100);
        assert_eq!(size.next(), MAX / 2);
        size.record(MAX / 2 - 1);
        size.record(10);
        assert_eq!(size.next(), MAX / 2, "a read above half resets the count");
        for _ in 0..20 {
            size.record(0);
        }
        assert_eq!(size.next(), MIN);
    }
}
