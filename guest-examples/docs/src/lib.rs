//! A document filter (`plinth:docs/filter@0.1.0`): the example of a rich interface, with
//! records, a variant, an enum, options, a tuple, bytes, a resource and a host import.
//!
//! `check` looks at each line of a document's body: a word the host bans (`host-api.is-banned`)
//! is a blocker, trailing spaces a warning (with the trimmed line as the suggestion), a line of
//! over 100 characters a note. No findings is `clean`; a blocker — or, in a strict session, a
//! warning — is `rejected`; anything else is `findings`. Every blocker is also reported to the
//! host with `host-api.notify` as it is found. A body over 64 KiB is `too-large`, an empty
//! title `malformed`.
//!
//! A `session` counts the documents, words and findings checked in it; dropping it tells the
//! host `session NAME closed` through `notify`.
//!
//! For the host's fault tests, a document tagged `plinth:trap` makes the guest panic.

wit_bindgen::generate!({
    path: ["../../wit/host", "../../wit/docs"],
    world: "plinth:docs/plugin@0.1.0",
    generate_all,
});

use std::cell::RefCell;

use exports::plinth::docs::filter::{Guest, GuestSession};
use plinth::docs::host_api;
use plinth::docs::types::{Document, FilterError, Finding, Severity, Stats, Verdict};
use plinth::host::logging::{self, Field, Level};

/// The largest body `check` accepts, in bytes.
const MAX_BODY: u64 = 64 << 10;
/// Lines longer than this get a note.
const LONG_LINE: usize = 100;

struct Filter;

/// Checks `doc`; `strict` makes warnings reject.
fn check(doc: &Document, strict: bool) -> Result<Verdict, FilterError> {
    if doc.tags.iter().any(|tag| tag == "plinth:trap") {
        panic!("the document {:?} asked the filter to trap", doc.title);
    }
    let size = doc.body.len() as u64;
    if size > MAX_BODY {
        return Err(FilterError::TooLarge((size, MAX_BODY)));
    }
    if doc.title.trim().is_empty() {
        return Err(FilterError::Malformed("the title is empty".to_owned()));
    }
    logging::log(
        Level::Debug,
        "checking a document",
        &[Field {
            key: "title".to_owned(),
            value: doc.title.clone(),
        }],
    );
    let findings = findings(&doc.body);
    let rejects = |finding: &Finding| {
        finding.severity == Severity::Blocker || (strict && finding.severity == Severity::Warning)
    };
    Ok(match findings.iter().find(|finding| rejects(finding)) {
        Some(first) => Verdict::Rejected(format!("line {}: {}", first.line, first.message)),
        None if findings.is_empty() => Verdict::Clean,
        None => Verdict::Findings(findings),
    })
}

fn findings(body: &str) -> Vec<Finding> {
    let mut found = Vec::new();
    for (index, line) in body.lines().enumerate() {
        let line_number = index as u32 + 1;
        for word in line.split(|c: char| !c.is_alphanumeric()) {
            if !word.is_empty() && host_api::is_banned(word) {
                let message = format!("the word {word:?} is banned");
                host_api::notify(Severity::Blocker, &message);
                found.push(Finding {
                    severity: Severity::Blocker,
                    line: line_number,
                    message,
                    suggestion: None,
                });
            }
        }
        if line.ends_with([' ', '\t']) {
            found.push(Finding {
                severity: Severity::Warning,
                line: line_number,
                message: "trailing spaces".to_owned(),
                suggestion: Some(line.trim_end().to_owned()),
            });
        }
        if line.chars().count() > LONG_LINE {
            found.push(Finding {
                severity: Severity::Note,
                line: line_number,
                message: format!("the line is longer than {LONG_LINE} characters"),
                suggestion: None,
            });
        }
    }
    found
}

fn word_count(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

impl Guest for Filter {
    type Session = Session;

    fn check(doc: Document) -> Result<Verdict, FilterError> {
        check(&doc, false)
    }

    fn word_count(text: String) -> u32 {
        word_count(&text)
    }

    fn normalize(body: Vec<u8>) -> Vec<u8> {
        let text = String::from_utf8_lossy(&body)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        let mut normalized = text
            .split('\n')
            .map(|line| line.trim_end_matches([' ', '\t']))
            .collect::<Vec<_>>()
            .join("\n");
        normalized.shrink_to_fit();
        normalized.into_bytes()
    }

    fn rejects_at() -> Option<Severity> {
        Some(Severity::Blocker)
    }
}

/// A review session's state.
struct Session {
    name: String,
    strict: bool,
    stats: RefCell<Stats>,
}

impl GuestSession for Session {
    fn new(name: String, strict: bool) -> Session {
        Session {
            name,
            strict,
            stats: RefCell::new(Stats {
                documents: 0,
                words: 0,
                findings: 0,
            }),
        }
    }

    fn check(&self, doc: Document) -> Result<Verdict, FilterError> {
        let verdict = check(&doc, self.strict)?;
        let mut stats = self.stats.borrow_mut();
        stats.documents += 1;
        stats.words += u64::from(word_count(&doc.body));
        stats.findings += match &verdict {
            Verdict::Clean => 0,
            Verdict::Findings(findings) => findings.len() as u32,
            Verdict::Rejected(_) => 1,
        };
        Ok(verdict)
    }

    fn stats(&self) -> Stats {
        *self.stats.borrow()
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        host_api::notify(Severity::Note, &format!("session {} closed", self.name));
    }
}

export!(Filter);
