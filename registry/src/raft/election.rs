//! Starting an election that openraft leaves waiting too long.
//!
//! openraft 0.9 draws each member's election timeout once per process and checks it on a
//! tick (every 1.5 heartbeat intervals); a follower campaigns 1.25E–1.5E after it last heard
//! from its leader (E = `--election-timeout`). Two of its rules make some failovers much
//! slower, as the leader-kill test's member logs showed:
//!
//! - A member that once lost an election to a longer log keeps a "greater log seen" flag
//!   that adds 1.5E to its timeout, until its *own timer* starts an election. A member that
//!   lost the bootstrap election and holds the longest log when the leader dies makes the
//!   whole cluster wait for it (1.5 s after the kill in one run at E = 500 ms).
//! - After a round that elects no one (the shorter log asked first and voted for itself, so
//!   the longer log was refused in the same term), the longer log adopts the other's vote,
//!   a tie in one term going to the larger member id, and waits its whole timeout again.
//!
//! [`nudge_elections`] starts the next round itself (openraft's `trigger().elect()`) when
//! this member is a voter without a confirmed leader (a follower still trusting a silent
//! leader, a follower whose vote no leader confirmed, or a candidate) and all of these hold:
//! - nothing arrived from a leader for longer than openraft's own latest campaign time
//!   (1.5E plus a tick, [`Timing`]);
//! - a fresh random delay (E/10 to E/2, drawn per state) has passed since this member
//!   entered its current state, so two members stalled together do not fire together;
//! - no peer refused this member's vote because the peer's log is longer, since it last
//!   heard from a leader ([`Hints`]): openraft holds such a member back on purpose, so
//!   that the longer log can win. (Hurrying it too stole every term from the longer log in
//!   an earlier attempt: one failover of 4.46 s, and 13 of 40 runs failed before printing
//!   one.)
//!
//! It acts at most once per state (term and vote), never on a leader or a learner.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::metrics::RaftServerMetrics;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{ServerState, Vote};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Member, NodeId};

/// The nudger's two waits, taken from openraft's own configuration so that they follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How long a member may go without hearing from a leader before openraft itself has
    /// campaigned at the latest: its leader lease and its largest election timeout (both
    /// `election_timeout_max`), then the next tick (1.5 heartbeat intervals).
    pub silence: Duration,
    /// The range (ms) a per-state delay is drawn from: from a fifth of openraft's shortest
    /// timeout (ample for a vote round and the winner's first AppendEntries on a LAN) up to
    /// that timeout.
    pub delay_ms: std::ops::Range<u64>,
}

impl Timing {
    pub fn from_config(c: &openraft::Config) -> Timing {
        let low = (c.election_timeout_min / 5).max(1);
        Timing {
            silence: Duration::from_millis(
                2 * c.election_timeout_max + c.heartbeat_interval * 3 / 2,
            ),
            delay_ms: low..c.election_timeout_min.max(low + 1),
        }
    }

    /// A fresh per-state delay.
    pub fn delay(&self, rng: &mut impl Rng) -> Duration {
        Duration::from_millis(rng.gen_range(self.delay_ms.clone()))
    }
}

/// What the peer layer tells the election nudger: when a leader was last heard from, and
/// when a peer last refused this member's vote for having a shorter log.
#[derive(Debug)]
pub struct Hints {
    base: Instant,
    /// Milliseconds after `base` (+1, so that 0 means never).
    leader_heard: AtomicU64,
    refused_for_shorter_log: AtomicU64,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            base: Instant::now(),
            leader_heard: AtomicU64::new(0),
            refused_for_shorter_log: AtomicU64::new(0),
        }
    }
}

impl Hints {
    fn stamp(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    /// An AppendEntries (or heartbeat) from a leader this member accepts arrived.
    pub fn leader_heard(&self) {
        self.leader_heard.store(self.stamp(), Ordering::Relaxed);
    }

    /// Looks at the answer to one of this member's vote requests.
    pub fn vote_answered(&self, req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>) {
        if !resp.vote_granted && resp.last_log_id > req.last_log_id {
            self.refused_for_shorter_log
                .store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// When a leader was last heard from (this process's start if never).
    fn last_heard(&self) -> Instant {
        let ms = self.leader_heard.load(Ordering::Relaxed).saturating_sub(1);
        self.base + Duration::from_millis(ms)
    }

    /// Was this member refused for a shorter log since it last heard from a leader?
    pub fn held_back(&self) -> bool {
        self.refused_for_shorter_log.load(Ordering::Relaxed)
            >= self.leader_heard.load(Ordering::Relaxed).max(1)
    }
}

/// The state a nudge is about: a voter without a confirmed leader of its own.
fn stalled(m: &RaftServerMetrics<NodeId, Member>) -> Option<Vote<NodeId>> {
    match m.state {
        ServerState::Follower | ServerState::Candidate => Some(m.vote),
        ServerState::Leader | ServerState::Learner | ServerState::Shutdown => None,
    }
}

/// Watches this member's server state and the peer layer's [`Hints`]; see the module doc for
/// when it calls `elect`. Returns when the metrics sender is dropped (Raft shut down) or
/// `elect` fails.
pub async fn nudge_elections<F, Fut, E>(
    mut metrics: watch::Receiver<RaftServerMetrics<NodeId, Member>>,
    timing: Timing,
    hints: std::sync::Arc<Hints>,
    mut elect: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    loop {
        // Wait until this member has no leader of its own.
        let vote = loop {
            if let Some(vote) = stalled(&metrics.borrow_and_update()) {
                break vote;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        };
        let entered = Instant::now();
        let delay = timing.delay(&mut rand::thread_rng());
        // Wait for the later of the two deadlines, unless the state changes first. A leader
        // that speaks up moves the silence deadline on.
        loop {
            let deadline = (hints.last_heard() + timing.silence).max(entered + delay);
            if Instant::now() >= deadline {
                if hints.held_back() {
                    tracing::debug!(%vote, "a peer has a longer log: leaving the election to it");
                } else {
                    tracing::info!(
                        %vote,
                        silent_ms = hints.last_heard().elapsed().as_millis() as u64,
                        "no leader heard from: campaigning"
                    );
                    if let Err(e) = elect().await {
                        tracing::debug!(error = %e, "campaign not started");
                        return;
                    }
                }
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if stalled(&metrics.borrow_and_update()) != Some(vote) {
                        break;
                    }
                }
            }
        }
        // Nothing more in this state: wait until it changes (at once if it already has).
        loop {
            if stalled(&metrics.borrow_and_update()) != Some(vote) {
                break;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use openraft::{Membership, StoredMembership};
    use rand::SeedableRng;

    use super::*;

    /// openraft's timeouts as berth sets them for `--election-timeout e --heartbeat-interval hb`.
    fn timing(e: u64, hb: u64) -> Timing {
        Timing::from_config(&openraft::Config {
            heartbeat_interval: hb,
            election_timeout_min: e / 2,
            election_timeout_max: e * 3 / 4,
            ..Default::default()
        })
    }

    fn metrics(state: ServerState, vote: Vote<NodeId>) -> RaftServerMetrics<NodeId, Member> {
        RaftServerMetrics {
            id: 1,
            vote,
            state,
            current_leader: vote.is_committed().then_some(vote.leader_id().node_id),
            membership_config: Arc::new(StoredMembership::new(
                None,
                Membership::<NodeId, Member>::new(
                    vec![BTreeSet::from([1, 2, 3])],
                    BTreeSet::<NodeId>::new(),
                ),
            )),
        }
    }

    /// A follower of member 2's leadership in `term`.
    fn follower(term: u64) -> RaftServerMetrics<NodeId, Member> {
        metrics(ServerState::Follower, Vote::new_committed(term, 2))
    }

    /// A candidate in `term`.
    fn candidate(term: u64) -> RaftServerMetrics<NodeId, Member> {
        metrics(ServerState::Candidate, Vote::new(term, 1))
    }

    fn start(
        initial: RaftServerMetrics<NodeId, Member>,
        hints: Arc<Hints>,
    ) -> (
        watch::Sender<RaftServerMetrics<NodeId, Member>>,
        Arc<AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = watch::channel(initial);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        // Election timeout 100 ms, heartbeat 20 ms: silence 180 ms, delays 10..50 ms.
        let task = tokio::spawn(nudge_elections(rx, timing(100, 20), hints, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), String>(()) }
        }));
        (tx, calls, task)
    }

    fn count(calls: &AtomicUsize) -> usize {
        calls.load(Ordering::SeqCst)
    }

    /// Waits (real time, up to 3 s) until `elect` was called `n` times.
    async fn calls_reach(calls: &AtomicUsize, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while count(calls) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "elect was not called {n} times"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Keeps "hearing from the leader" every 20 ms for `for_ms`.
    async fn heartbeats(hints: &Hints, for_ms: u64) {
        for _ in 0..for_ms / 20 {
            hints.leader_heard();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn refusal(hints: &Hints, mine: u64, theirs: u64, granted: bool) {
        let log_id = |i: u64| {
            Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(1, 2),
                i,
            ))
        };
        hints.vote_answered(
            &VoteRequest::new(Vote::new(5, 1), log_id(mine)),
            &VoteResponse::new(Vote::new(5, 3), log_id(theirs), granted),
        );
    }

    #[test]
    fn limits_and_delays() {
        let t = timing(1000, 100);
        assert_eq!(t.silence, Duration::from_millis(1650));
        assert_eq!(t.delay_ms, 100..500);
        assert_eq!(timing(100, 20).silence, Duration::from_millis(180));
        assert_eq!(timing(5, 1).delay_ms, 1..2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draws: BTreeSet<Duration> = (0..200).map(|_| t.delay(&mut rng)).collect();
        assert!(draws.len() > 100, "only {} distinct delays", draws.len());
        assert!(draws
            .iter()
            .all(|d| (100..500).contains(&(d.as_millis() as u64))));
    }

    #[test]
    fn only_a_refusal_by_a_longer_log_holds_back() {
        let hints = Hints::default();
        assert!(!hints.held_back());
        refusal(&hints, 10, 10, false);
        assert!(!hints.held_back(), "equal logs: a split vote");
        refusal(&hints, 10, 9, false);
        assert!(!hints.held_back(), "the peer's log is shorter");
        refusal(&hints, 10, 11, true);
        assert!(!hints.held_back(), "granted");
        refusal(&hints, 10, 11, false);
        assert!(hints.held_back());
        std::thread::sleep(Duration::from_millis(2));
        hints.leader_heard();
        assert!(!hints.held_back(), "a leader was heard from since");
    }

    // Real time throughout: "not yet" is checked well inside the shortest wait, "done" with
    // a deadline.
    #[tokio::test]
    async fn a_follower_of_a_silent_leader_campaigns_once() {
        let hints = Arc::new(Hints::default());
        let (tx, calls, task) = start(follower(3), hints.clone());
        heartbeats(&hints, 400).await;
        assert_eq!(count(&calls), 0, "the leader was heard from");
        // The leader falls silent: nothing before the silence limit (180 ms), then once.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(count(&calls), 0, "too early");
        calls_reach(&calls, 1).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(count(&calls), 1, "once per state");
        // The campaign moved it on (a candidate in term 4) and that round split: it campaigns
        // again after a fresh delay.
        tx.send(candidate(4)).unwrap();
        calls_reach(&calls, 2).await;
        drop(tx);
        task.await.expect("ends with its sender");
    }

    #[tokio::test]
    async fn an_election_that_ends_in_time_is_left_alone() {
        let hints = Arc::new(Hints::default());
        let (tx, calls, task) = start(follower(3), hints.clone());
        heartbeats(&hints, 200).await;
        // openraft campaigns by itself, and wins within the nudge delay.
        tx.send(candidate(4)).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        tx.send(metrics(ServerState::Leader, Vote::new_committed(4, 1)))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(count(&calls), 0, "a leader is never nudged");
        // Another member wins instead; this one follows it and hears from it.
        tx.send(follower(5)).unwrap();
        heartbeats(&hints, 400).await;
        assert_eq!(count(&calls), 0);
        drop(tx);
        task.await.expect("ends with its sender");
    }

    #[tokio::test]
    async fn a_member_refused_for_a_shorter_log_is_left_to_openraft() {
        let hints = Arc::new(Hints::default());
        let (tx, calls, task) = start(follower(3), hints.clone());
        heartbeats(&hints, 100).await;
        // The leader dies; this member campaigns (openraft) and a longer log refuses it.
        tx.send(candidate(4)).unwrap();
        refusal(&hints, 10, 11, false);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // It adopted the longer log's vote for the next term: still held back.
        tx.send(metrics(ServerState::Follower, Vote::new(5, 3)))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(count(&calls), 0, "held back until a leader is heard from");
        // The longer log won and was heard from, then fell silent too: this member may go.
        tx.send(follower(5)).unwrap();
        hints.leader_heard();
        calls_reach(&calls, 1).await;
        drop(tx);
        task.await.expect("ends with its sender");
    }
}
