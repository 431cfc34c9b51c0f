//! The greeter example plugin, exporting both versions of `plinth:greeter`.
//!
//! A host that accepts `0.2.0` gets the greeting by name; an older host that only knows
//! `0.1.0` still gets the fixed greeting from the same component.

wit_bindgen::generate!({
    path: ["../../wit/host", "../../wit/greeter-0.1", "../../wit/greeter-0.2"],
    inline: "
        package plinth:greeter-example;

        world greeter {
            import plinth:host/logging@0.1.0;
            export plinth:greeter/greeter@0.1.0;
            export plinth:greeter/greeter@0.2.0;
        }
    ",
    world: "plinth:greeter-example/greeter",
    generate_all,
});

use plinth::host::logging::{self, Field, Level};

struct Greeter;

impl exports::plinth::greeter0_1_0::greeter::Guest for Greeter {
    fn greet() -> String {
        "Hello!".to_string()
    }
}

impl exports::plinth::greeter0_2_0::greeter::Guest for Greeter {
    fn greet(name: String) -> String {
        logging::log(
            Level::Info,
            "greeting",
            &[Field {
                key: "name".into(),
                value: name.clone(),
            }],
        );
        format!("Hello, {name}!")
    }
}

export!(Greeter);
