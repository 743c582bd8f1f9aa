//! The footer: an empty gzip member at the blob's end whose extra field holds the
//! TOC's offset, `%016xSTARGZ` (eStargz: 51 bytes, in an `SG` subfield; legacy
//! stargz: 47 bytes, the bare string).

use std::io::Read;

use super::error::EstargzError;

pub const FOOTER_SIZE: u64 = 51;
pub const LEGACY_FOOTER_SIZE: u64 = 47;

/// Reads the TOC's offset from `tail`, the blob's last [`FOOTER_SIZE`] bytes (or
/// all of a shorter blob); returns it and the footer's length.
pub fn parse(tail: &[u8]) -> Result<(u64, u64), EstargzError> {
    let bad = |why: &str| EstargzError::Footer(why.to_owned());
    let last = |n: u64| (tail.len() as u64 >= n).then(|| &tail[tail.len() - n as usize..]);
    let (footer, subfield) = match (last(FOOTER_SIZE), last(LEGACY_FOOTER_SIZE)) {
        (Some(f), _) if f[10..16] == [26, 0, b'S', b'G', 22, 0] => (f, &f[16..38]),
        (_, Some(f)) if f[10..12] == [22, 0] => (f, &f[12..34]),
        _ => {
            return Err(bad(
                "neither 51 bytes with an SG subfield nor the legacy 47",
            ))
        }
    };
    if footer[..4] != [0x1f, 0x8b, 8, 4] {
        return Err(bad("no gzip header with an extra field"));
    }
    // The footer is an empty member: anything in it is not eStargz.
    let mut rest = Vec::new();
    flate2::read::GzDecoder::new(footer)
        .take(1)
        .read_to_end(&mut rest)
        .map_err(|e| bad(&format!("not a gzip member: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("the member is not empty"));
    }
    let (hex, magic) = subfield.split_at(16);
    if magic != b"STARGZ" {
        return Err(bad("no STARGZ magic"));
    }
    let offset = std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| bad("the TOC offset is not 16 hex digits"))?;
    Ok((offset, footer.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_and_legacy_footers() {
        let current = berth_testkit::estargz::footer(0x1234);
        assert_eq!(parse(&current).unwrap(), (0x1234, 51));
        // The legacy one: the extra field is the bare string.
        let mut legacy = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255, 22, 0];
        legacy.extend_from_slice(format!("{:016x}STARGZ", 77).as_bytes());
        legacy.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&legacy).unwrap(), (77, 47));
        let mut padded = vec![0u8; 4];
        padded.extend_from_slice(&legacy);
        assert_eq!(parse(&padded).unwrap(), (77, 47));
        let mut bad = current.clone();
        bad[20] = b'g';
        assert!(parse(&bad).is_err());
        assert!(parse(&current[..40]).is_err());
        let mut not_empty = current.clone();
        not_empty[38] = 0;
        assert!(parse(&not_empty).is_err());
    }
}
