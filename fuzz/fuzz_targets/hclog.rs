//! A plugin's stderr: every line becomes a log entry (hclog JSON, `[LEVEL]` text, or plain),
//! whatever it holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_subprocess::logs::StderrParser;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parser = StderrParser::new();
    for line in text.split('\n') {
        let entry = parser.parse(line);
        let _ = plinth_subprocess::logs::Fields(&entry.fields).to_string();
    }
});
