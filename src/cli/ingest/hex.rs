//! Hexadecimal text as bytes: OTLP/JSON's trace and span ids, and the
//! `sha256:` digests of the API key file.

/// Hexadecimal digits, in either case, as bytes; `None` for anything else
/// (an odd count, a sign, a space).
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
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
    fn digits_in_either_case_and_nothing_else() {
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("00fFa1"), Some(vec![0, 255, 161]));
        for bad in ["abc", "zz", "+1", " 1", "\u{e9}"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
