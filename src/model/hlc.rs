//! Hybrid logical clock: wall-clock milliseconds in the high 48 bits, a
//! counter in the low 16. Timestamps a node issues only ever grow, even when
//! the wall clock steps back, so the history order (hlc, origin, seq) agrees
//! with causality on every node.

/// One hybrid-logical-clock timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(pub u64);

impl Hlc {
    const COUNTER_BITS: u32 = 16;

    /// The first timestamp of a wall-clock millisecond.
    pub fn at(unix_ms: u64) -> Self {
        Hlc(unix_ms.saturating_mul(1 << Self::COUNTER_BITS))
    }

    /// The wall-clock part, in Unix milliseconds.
    pub fn unix_ms(self) -> u64 {
        self.0 >> Self::COUNTER_BITS
    }
}

/// Issues strictly increasing [`Hlc`]s. The caller supplies the wall time, so
/// the clock itself is pure and testable.
#[derive(Debug, Default, Clone)]
pub struct HlcClock {
    last: u64,
}

impl HlcClock {
    /// A clock that will never issue a timestamp at or below `last`.
    pub fn after(last: Hlc) -> Self {
        Self { last: last.0 }
    }

    /// The next timestamp for a local event at wall time `unix_ms`.
    pub fn tick(&mut self, unix_ms: u64) -> Hlc {
        let wall = unix_ms << Hlc::COUNTER_BITS;
        // When the counter overflows, borrowing from the millisecond part is
        // harmless: the timestamp still grows and stays near real time.
        self.last = wall.max(self.last.saturating_add(1));
        Hlc(self.last)
    }

    /// The wall time (Unix ms) the next [`HlcClock::tick`] at `unix_ms`
    /// will carry, without issuing it.
    pub fn next_unix_ms(&self, unix_ms: u64) -> u64 {
        Hlc(self.last.saturating_add(1)).unix_ms().max(unix_ms)
    }

    /// Takes note of a timestamp seen from elsewhere.
    pub fn observe(&mut self, seen: Hlc) {
        self.last = self.last.max(seen.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_even_when_wall_clock_steps_back() {
        let mut c = HlcClock::default();
        let a = c.tick(1_000);
        let b = c.tick(1_000);
        let d = c.tick(900);
        assert!(a < b && b < d);
        assert_eq!(a.unix_ms(), 1_000);
        assert_eq!(d.unix_ms(), 1_000);
        assert_eq!(c.next_unix_ms(900), c.tick(900).unix_ms());
        c.observe(Hlc(5_000 << 16));
        assert!(c.tick(1_001) > Hlc(5_000 << 16));
    }
}
