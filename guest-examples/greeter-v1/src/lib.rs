//! An older greeter plugin that only knows `plinth:greeter@0.1.0`.
//!
//! It shows version negotiation from the other side: a host accepting both versions falls
//! back to `0.1.0`, and a host that only accepts `0.2.0` refuses it with a typed error.

wit_bindgen::generate!({
    path: ["../../wit/host", "../../wit/greeter-0.1"],
    world: "plinth:greeter/plugin@0.1.0",
    generate_all,
});

struct Greeter;

impl exports::plinth::greeter::greeter::Guest for Greeter {
    fn greet() -> String {
        "Hello from version 0.1.0!".to_string()
    }
}

export!(Greeter);
