//! The kv example plugin: an in-memory key/value store.
//!
//! Every `put` is logged through the host's `plinth:host/logging` import with the key and the
//! value's length as fields.

use std::cell::RefCell;
use std::collections::HashMap;

wit_bindgen::generate!({
    path: ["../../wit/host", "../../wit/kv"],
    world: "plinth:kv/plugin@0.1.0",
    generate_all,
});

use exports::plinth::kv::store::Guest;
use plinth::host::logging::{self, Field, Level};

thread_local! {
    static STORE: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
}

struct Kv;

impl Guest for Kv {
    fn get(key: String) -> Result<Vec<u8>, String> {
        STORE
            .with_borrow(|store| store.get(&key).cloned())
            .ok_or_else(|| format!("no value stored under key {key:?}"))
    }

    fn put(key: String, value: Vec<u8>) -> Result<(), String> {
        logging::log(
            Level::Debug,
            "put",
            &[
                Field {
                    key: "key".into(),
                    value: key.clone(),
                },
                Field {
                    key: "len".into(),
                    value: value.len().to_string(),
                },
            ],
        );
        STORE.with_borrow_mut(|store| store.insert(key, value));
        Ok(())
    }
}

export!(Kv);
