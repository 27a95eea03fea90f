//! HMAC-SHA256 message signing (the only scheme jupyter_client uses by default).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies the four JSON frames of a message. An empty key disables signing, as the
/// spec says: the signature frame is then the empty string.
#[derive(Clone)]
pub struct Signer {
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("enabled", &self.mac.is_some())
            .finish()
    }
}

impl Signer {
    pub fn new(key: &str) -> Self {
        let mac = (!key.is_empty()).then(|| {
            // HMAC accepts keys of any length, so this cannot fail.
            HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length")
        });
        Signer { mac }
    }

    pub fn is_enabled(&self) -> bool {
        self.mac.is_some()
    }

    /// Lowercase hex signature over the frames in order (buffers are not signed).
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        match &self.mac {
            None => String::new(),
            Some(mac) => {
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                hex::encode(mac.finalize().into_bytes())
            }
        }
    }

    /// Constant-time verification of a hex signature.
    pub fn verify(&self, signature: &[u8], parts: &[&[u8]]) -> bool {
        match &self.mac {
            None => true,
            Some(mac) => {
                let Ok(expected) = hex::decode(signature) else {
                    return false;
                };
                let mut mac = mac.clone();
                for part in parts {
                    mac.update(part);
                }
                mac.verify_slice(&expected).is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        let s = Signer::new("Jefe");
        assert_eq!(
            s.sign(&[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn verify_accepts_own_and_rejects_tampered() {
        let s = Signer::new("secret");
        let sig = s.sign(&[b"a", b"b"]);
        assert!(s.verify(sig.as_bytes(), &[b"a", b"b"]));
        assert!(!s.verify(sig.as_bytes(), &[b"a", b"c"]));
        assert!(!s.verify(b"not hex", &[b"a", b"b"]));
        assert!(!s.verify(b"", &[b"a", b"b"]));
    }

    #[test]
    fn empty_key_disables_signing() {
        let s = Signer::new("");
        assert_eq!(s.sign(&[b"x"]), "");
        assert!(s.verify(b"", &[b"x"]));
    }
}
