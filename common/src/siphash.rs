//! SipHash (Aumasson and Bernstein) over whole 64-bit words: SipHash-1-3 for cookies (the
//! variant Rust's own hash maps use; 7 rounds for an IPv4 cookie instead of 12, which matters
//! per packet in XDP) and SipHash-2-4 for key derivation, done rarely, in userspace.
//!
//! Inputs here are always fixed-layout tuples, so the message is given as little-endian u64
//! words; a message of `n` words hashes exactly like the byte string of its `8 * n` bytes.
//! Straight-line code with no byte loops: what the BPF verifier and JIT like best.

/// A 128-bit SipHash key, as two little-endian words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SipKey {
    pub k0: u64,
    pub k1: u64,
}

impl SipKey {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        let mut i = 0;
        while i < 8 {
            k0[i] = bytes[i];
            k1[i] = bytes[i + 8];
            i += 1;
        }
        Self {
            k0: u64::from_le_bytes(k0),
            k1: u64::from_le_bytes(k1),
        }
    }
}

#[derive(Clone, Copy)]
struct State {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl State {
    #[inline(always)]
    fn new(key: &SipKey) -> Self {
        Self {
            v0: key.k0 ^ 0x736f_6d65_7073_6575,
            v1: key.k1 ^ 0x646f_7261_6e64_6f6d,
            v2: key.k0 ^ 0x6c79_6765_6e65_7261,
            v3: key.k1 ^ 0x7465_6462_7974_6573,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline(always)]
    fn compress<const C: usize>(&mut self, word: u64) {
        self.v3 ^= word;
        let mut i = 0;
        while i < C {
            self.round();
            i += 1;
        }
        self.v0 ^= word;
    }
}

/// SipHash-C-D of the `8 * N` bytes whose little-endian words are `words`.
#[inline(always)]
fn siphash<const C: usize, const D: usize, const N: usize>(key: &SipKey, words: &[u64; N]) -> u64 {
    let mut state = State::new(key);
    let mut i = 0;
    while i < N {
        state.compress::<C>(words[i]);
        i += 1;
    }
    // Final block: no tail bytes, only the length byte.
    state.compress::<C>(((8 * N) as u64 & 0xff) << 56);
    state.v2 ^= 0xff;
    let mut i = 0;
    while i < D {
        state.round();
        i += 1;
    }
    state.v0 ^ state.v1 ^ state.v2 ^ state.v3
}

/// SipHash-1-3: the per-packet MAC of cookies.
#[inline(always)]
pub fn siphash13<const N: usize>(key: &SipKey, words: &[u64; N]) -> u64 {
    siphash::<1, 3, N>(key, words)
}

/// SipHash-2-4: key derivation.
#[inline(always)]
pub fn siphash24<const N: usize>(key: &SipKey, words: &[u64; N]) -> u64 {
    siphash::<2, 4, N>(key, words)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use core::hash::Hasher;

    use super::*;

    fn reference(key: [u8; 16], bytes: &[u8]) -> u64 {
        let mut hasher = siphasher::sip::SipHasher24::new_with_key(&key);
        hasher.write(bytes);
        hasher.finish()
    }

    fn reference13(key: [u8; 16], bytes: &[u8]) -> u64 {
        let mut hasher = siphasher::sip::SipHasher13::new_with_key(&key);
        hasher.write(bytes);
        hasher.finish()
    }

    #[test]
    fn siphash13_matches_the_reference_implementation() {
        let key_bytes: [u8; 16] = core::array::from_fn(|i| (i * 7) as u8);
        let key = SipKey::from_bytes(key_bytes);
        let bytes: [u8; 48] = core::array::from_fn(|i| (i * 3) as u8);
        let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
        assert_eq!(siphash13(&key, &[]), reference13(key_bytes, &[]));
        let three: [u64; 3] = core::array::from_fn(word);
        assert_eq!(
            siphash13(&key, &three),
            reference13(key_bytes, &bytes[..24])
        );
        let six: [u64; 6] = core::array::from_fn(word);
        assert_eq!(siphash13(&key, &six), reference13(key_bytes, &bytes));
    }

    #[test]
    fn matches_the_reference_implementation() {
        // The paper's key 00..0f, on messages of 0 to 6 words.
        let key_bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
        let key = SipKey::from_bytes(key_bytes);
        let bytes: [u8; 48] = core::array::from_fn(|i| i as u8);
        let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
        assert_eq!(siphash24(&key, &[]), reference(key_bytes, &[]));
        assert_eq!(
            siphash24(&key, &[word(0)]),
            reference(key_bytes, &bytes[..8])
        );
        assert_eq!(
            siphash24(&key, &[word(0), word(1), word(2)]),
            reference(key_bytes, &bytes[..24])
        );
        let six: [u64; 6] = core::array::from_fn(word);
        assert_eq!(siphash24(&key, &six), reference(key_bytes, &bytes));
        // The paper's published vector for the 8-byte message 00..07.
        assert_eq!(siphash24(&key, &[word(0)]), 0x93f5_f579_9a93_2462);
    }
}
