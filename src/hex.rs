//! Bytes as hexadecimal text and back: OTLP's trace and span ids, the
//! `sha256:` digests of the API key file, a private cluster's password, a
//! certificate's key in an error.

use std::fmt::Write as _;

/// Lowercase hexadecimal digits, two per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// Hexadecimal digits, in either case, as bytes; `None` for anything else
/// (an odd count, a sign, a space).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_lowercase_and_decodes_back() {
        assert_eq!(encode(&[0, 255, 161]), "00ffa1");
        assert_eq!(encode(&[]), "");
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&bytes)), Some(bytes));
    }

    #[test]
    fn digits_in_either_case_and_nothing_else() {
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("00fFa1"), Some(vec![0, 255, 161]));
        for bad in ["abc", "zz", "+1", " 1", "\u{e9}"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
