//! A guest whose functions take and return resources (`plinth:resources-test/tally`), for the
//! tests of what `plinth call` does with functions it cannot call from the command line.

use std::cell::Cell;

wit_bindgen::generate!({
    path: "../../wit/resources-test",
    world: "plinth:resources-test/probe@0.1.0",
    generate_all,
});

use exports::plinth::resources_test::tally::{Counter as CounterHandle, Guest, GuestCounter};

struct Probe;

/// The state behind one `counter` resource.
struct Counter {
    value: Cell<u32>,
}

impl GuestCounter for Counter {
    fn new(start: u32) -> Counter {
        Counter {
            value: Cell::new(start),
        }
    }

    fn bump(&self) -> u32 {
        let next = self.value.get().wrapping_add(1);
        self.value.set(next);
        next
    }
}

impl Guest for Probe {
    type Counter = Counter;

    fn make(start: u32) -> CounterHandle {
        CounterHandle::new(Counter::new(start))
    }

    fn read(c: exports::plinth::resources_test::tally::CounterBorrow<'_>) -> u32 {
        c.get::<Counter>().value.get()
    }

    fn maybe(start: u32) -> Option<CounterHandle> {
        (start != 0).then(|| Probe::make(start))
    }

    fn total(counters: Vec<CounterHandle>) -> u32 {
        counters
            .iter()
            .map(|c| c.get::<Counter>().value.get())
            .sum()
    }

    fn describe() -> String {
        "counters handed out as resources".to_owned()
    }
}

export!(Probe);
