//! A plugin whose export is an async function (`plinth:echo/echo@0.1.0`): the component is
//! lifted with the component model's async ABI, so a host needs concurrency support to run it.

wit_bindgen::generate!({
    path: "../../wit/echo",
    world: "plugin",
});

struct Echo;

impl exports::plinth::echo::echo::Guest for Echo {
    async fn echo(text: String, suffix: String) -> String {
        format!("{text}{suffix}")
    }
}

export!(Echo);
