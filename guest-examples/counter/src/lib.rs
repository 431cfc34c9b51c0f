//! The counter example plugin: counts by calling back into the host.
//!
//! `put` adds to the stored count through the host-provided `add-helper` import, as
//! go-plugin's bidirectional example does through its `AddHelper` broker service.

use std::cell::RefCell;
use std::collections::HashMap;

wit_bindgen::generate!({
    path: ["../../wit/host", "../../wit/counter"],
    world: "plinth:counter/plugin@0.1.0",
    generate_all,
});

use exports::plinth::counter::counter::Guest;
use plinth::counter::add_helper;

thread_local! {
    static COUNTS: RefCell<HashMap<String, i64>> = RefCell::new(HashMap::new());
}

struct Counter;

impl Guest for Counter {
    fn put(key: String, value: i64) -> Result<(), String> {
        let current = COUNTS.with_borrow(|counts| counts.get(&key).copied().unwrap_or(0));
        let sum = add_helper::sum(current, value);
        COUNTS.with_borrow_mut(|counts| counts.insert(key, sum));
        Ok(())
    }

    fn get(key: String) -> Result<i64, String> {
        Ok(COUNTS.with_borrow(|counts| counts.get(&key).copied().unwrap_or(0)))
    }
}

export!(Counter);
