//! A guest importing a resource no host provides (`plinth:resources-test/clock-source`), for
//! the tests of how a component that cannot be linked is reported.

wit_bindgen::generate!({
    path: "../../wit/resources-test",
    world: "plinth:resources-test/needs-clock@0.1.0",
    generate_all,
});

use plinth::resources_test::clock_source;

struct Uptime;

impl Guest for Uptime {
    fn uptime() -> u64 {
        clock_source::open().now()
    }
}

export!(Uptime);
