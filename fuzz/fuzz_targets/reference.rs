//! The image reference and registry URL parsers never panic, and what they accept
//! prints back to something that parses to the same value.
#![no_main]

use berth_types::{ImageRef, RegistryUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = s.parse::<ImageRef>() {
        let again: ImageRef = r.to_string().parse().expect("display of a parsed reference parses");
        assert_eq!(again, r);
    }
    if let Ok(u) = s.parse::<RegistryUrl>() {
        let _ = u.to_string().parse::<RegistryUrl>();
    }
});
