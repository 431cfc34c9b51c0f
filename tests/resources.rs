//! End-to-end tests of guest resources held by the host, against the real `docs` guest
//! (`guest-examples/docs`, `plinth:docs/filter@0.1.0`): a session lives in the instance that
//! created it, every call on it runs there, and once that instance is gone the session is a
//! typed error, never another session's answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use plinth::{Client, ClientConfig, Error};
use plinth_examples::docs::{DocFilter, DocsPlugin, Document, HostApi, Severity, Verdict};
use plinth_interop::guest;

/// Bounds every await that could hang if a promise broke; never a timing assertion.
const HANG: Duration = Duration::from_secs(60);

/// A host that bans one word, keeps what the filter tells it, and holds a check that meets
/// the word `wait` until the test lets it go on.
struct Host {
    notes: Mutex<Vec<(Severity, String)>>,
    gate: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Default for Host {
    fn default() -> Host {
        Host {
            notes: Mutex::default(),
            gate: tokio::sync::Semaphore::new(0),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl Host {
    fn notes(&self) -> Vec<String> {
        let notes = self.notes.lock().unwrap();
        notes.iter().map(|(_, message)| message.clone()).collect()
    }
}

#[async_trait]
impl HostApi for Host {
    async fn is_banned(&self, word: &str) -> plinth::Result<bool> {
        if word == "wait" {
            self.waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.gate
                .acquire()
                .await
                .expect("the gate stays open")
                .forget();
        }
        Ok(word == "forbidden")
    }

    async fn notify(&self, severity: Severity, message: &str) -> plinth::Result<()> {
        self.notes
            .lock()
            .unwrap()
            .push((severity, message.to_owned()));
        Ok(())
    }
}

fn doc(title: &str, body: &str) -> Document {
    Document {
        title: title.to_owned(),
        body: body.to_owned(),
        tags: Vec::new(),
        author: None,
    }
}

async fn filter(max_instances: usize) -> (Client, Arc<dyn DocFilter>, Arc<Host>) {
    let host = Arc::new(Host::default());
    let client = Client::start(ClientConfig::wasm(guest("docs")).max_instances(max_instances))
        .await
        .expect("start");
    let filter = client
        .dispense(&DocsPlugin::new(host.clone()))
        .await
        .expect("dispense");
    (client, filter, host)
}

#[tokio::test]
async fn every_function_answers_through_the_pool() {
    let (_client, filter, host) = filter(2).await;
    assert_eq!(
        filter.check(&doc("ok", "all fine")).await.unwrap(),
        Verdict::Clean
    );
    let Verdict::Findings(findings) = filter.check(&doc("t", "trailing  ")).await.unwrap() else {
        panic!("expected findings");
    };
    assert_eq!(findings[0].suggestion.as_deref(), Some("trailing"));
    let verdict = filter.check(&doc("t", "a forbidden word")).await.unwrap();
    assert!(matches!(verdict, Verdict::Rejected(_)), "{verdict:?}");
    assert_eq!(host.notes(), ["the word \"forbidden\" is banned"]);
    let err = filter.check(&doc("", "untitled")).await.unwrap_err();
    assert!(matches!(err, Error::Plugin { .. }), "{err}");
    assert_eq!(filter.word_count("three little words").await.unwrap(), 3);
    assert_eq!(filter.normalize(b"a  \r\nb\r").await.unwrap(), b"a\nb\n");
    assert_eq!(filter.rejects_at().await.unwrap(), Some(Severity::Blocker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_sessions_on_four_instances_each_keep_their_own_state() {
    let (_client, filter, _host) = filter(4).await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64u32 {
        let filter = filter.clone();
        tasks.spawn(async move {
            let name = format!("session-{task}");
            let session = filter.session(&name, task % 2 == 0).await.expect("open");
            for round in 0..=task % 5 {
                let body = "word ".repeat(round as usize + 1);
                session.check(&doc("t", &body)).await.expect("check");
                tokio::task::yield_now().await;
            }
            let stats = session.stats().await.expect("stats");
            let checked = task % 5 + 1;
            assert_eq!(stats.documents, checked, "{name}");
            assert_eq!(stats.words, (1..=u64::from(checked)).sum::<u64>(), "{name}");
            assert_eq!(session.name().await.expect("name"), name);
        });
    }
    while let Some(done) = tokio::time::timeout(HANG, tasks.join_next())
        .await
        .expect("no session waits forever")
    {
        done.expect("a session task");
    }
}

#[tokio::test]
async fn a_session_whose_instance_trapped_is_stale_and_others_go_on() {
    let (_client, filter, host) = filter(4).await;
    let doomed = filter.session("doomed", false).await.unwrap();
    // Hold the only instance in a call, so that the next session is made in another one.
    let held = tokio::spawn({
        let filter = filter.clone();
        async move { filter.check(&doc("t", "wait")).await }
    });
    while !gate_waited(&host) {
        tokio::task::yield_now().await;
    }
    let survivor = filter.session("survivor", false).await.unwrap();
    host.gate.add_permits(1);
    held.await.unwrap().unwrap();
    survivor.check(&doc("t", "one two")).await.unwrap();

    let mut trap = doc("t", "boom");
    trap.tags.push("plinth:trap".to_owned());
    let err = doomed.check(&trap).await.unwrap_err();
    assert!(matches!(err, Error::Trap { .. }), "{err}");
    for _ in 0..3 {
        let err = doomed.stats().await.unwrap_err();
        assert!(
            matches!(&err, Error::StaleResource { resource, .. } if resource == "session"),
            "{err}"
        );
    }
    let stats = survivor.stats().await.unwrap();
    assert_eq!((stats.documents, stats.words), (1, 2));
    assert_eq!(survivor.name().await.unwrap(), "survivor");
    let fresh = filter.session("fresh", false).await.unwrap();
    assert_eq!(fresh.stats().await.unwrap().documents, 0);
}

/// Whether a check is waiting at the host's gate.
fn gate_waited(host: &Host) -> bool {
    host.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0
}

#[tokio::test]
async fn sessions_on_one_instance_wait_for_it_and_are_not_mixed_up() {
    // One instance: every session lives in it, and calls take turns.
    let (_client, filter, _host) = filter(1).await;
    let first = filter.session("first", false).await.unwrap();
    let second = filter.session("second", true).await.unwrap();
    let trailing = doc("t", "trailing  ");
    let (a, b) = tokio::join!(first.check(&trailing), second.check(&trailing));
    assert!(matches!(a.unwrap(), Verdict::Findings(_)));
    assert!(
        matches!(b.unwrap(), Verdict::Rejected(_)),
        "a strict session rejects"
    );
    assert_eq!(first.name().await.unwrap(), "first");
    assert_eq!(second.name().await.unwrap(), "second");
}

#[tokio::test]
async fn dropping_a_session_runs_the_guests_destructor() {
    let (_client, filter, host) = filter(2).await;
    let session = filter.session("short-lived", false).await.unwrap();
    session.check(&doc("t", "x")).await.unwrap();
    drop(session);
    let closed = async {
        while !host
            .notes()
            .iter()
            .any(|n| n == "session short-lived closed")
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(HANG, closed)
        .await
        .expect("the guest's destructor ran");
}

#[tokio::test]
async fn a_killed_plugins_sessions_say_killed() {
    let (client, filter, _host) = filter(2).await;
    let session = filter.session("s", false).await.unwrap();
    client.kill().await;
    let err = session.stats().await.unwrap_err();
    assert!(matches!(err, Error::Killed { .. }), "{err}");
}
