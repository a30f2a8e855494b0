//! Random numbers from the operating system (ring's `SystemRandom`, the
//! provider the TLS stack already uses), for what must not repeat across
//! processes: a sink's ledger instance, a private cluster's password, the
//! prefix of generated request ids.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

/// Fill `buf` with random bytes; false when the operating system has none
/// to give (then `buf` is left as it was).
pub fn fill(buf: &mut [u8]) -> bool {
    SystemRandom::new().fill(buf).is_ok()
}

/// A random 64-bit number for an id; when the operating system has no
/// randomness to give, the clock and the process id mixed (unique enough
/// for an id, not for a secret: use [`fill`] for those).
pub fn id() -> u64 {
    let mut bytes = [0u8; 8];
    if fill(&mut bytes) {
        return u64::from_le_bytes(bytes);
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_bytes_differ_from_call_to_call() {
        assert_ne!(id(), id());
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        assert!(fill(&mut a) && fill(&mut b));
        assert_ne!(a, b);
    }
}
