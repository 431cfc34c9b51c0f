//! The handshake line a plugin prints: any bytes parse to a line or a typed error, and a
//! parsed line prints back to one that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_subprocess::HandshakeLine;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(line) = HandshakeLine::parse(text) {
        let printed = line.to_string();
        let again = HandshakeLine::parse(&printed).expect("a printed handshake line parses");
        assert_eq!(again, line);
    }
});
