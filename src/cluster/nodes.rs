//! Which nodes are alive, from their heartbeats in Redis. A node is alive
//! while its heartbeat counter keeps moving; the time it has stood still is
//! measured on this node's own clock, so clocks that disagree between nodes
//! do not matter. A node that comes back under the same name is a new
//! incarnation: the old one is gone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

struct Beat {
    incarnation: u64,
    beat: u64,
    changed: Instant,
    /// Silent past the timeout: dead until its beat moves again (its last
    /// beat stays in Redis after a `kill -9`).
    dead: bool,
}

impl Beat {
    fn new(incarnation: u64, beat: u64, now: Instant) -> Self {
        Self {
            incarnation,
            beat,
            changed: now,
            dead: false,
        }
    }
}

pub struct Nodes {
    me: String,
    incarnation: u64,
    timeout: Duration,
    seen: Mutex<HashMap<String, Beat>>,
    /// Incarnations known gone (node, incarnation), until the list is read.
    gone: Mutex<Vec<(String, u64)>>,
}

impl Nodes {
    pub fn new(me: &str, incarnation: u64, timeout: Duration) -> Self {
        Self {
            me: me.to_owned(),
            incarnation,
            timeout,
            seen: Mutex::new(HashMap::new()),
            gone: Mutex::new(Vec::new()),
        }
    }

    /// A heartbeat value: `"<incarnation> <beat>"`.
    pub fn beat_value(&self, beat: u64) -> String {
        format!("{} {beat}", self.incarnation)
    }

    /// Takes the heartbeat hash as read from Redis. Returns the incarnations
    /// found gone since the last reading (silent too long, replaced by a newer
    /// incarnation, or removed).
    pub fn observe(&self, beats: &HashMap<String, String>) -> Vec<(String, u64)> {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        let mut gone = std::mem::take(&mut *self.gone.lock());
        for (node, value) in beats {
            let Some((incarnation, beat)) = parse_beat(value) else {
                continue;
            };
            match seen.get_mut(node) {
                Some(known) if known.incarnation == incarnation => {
                    if known.beat != beat {
                        known.beat = beat;
                        known.changed = now;
                        known.dead = false;
                    }
                }
                Some(known) => {
                    if !known.dead {
                        gone.push((node.clone(), known.incarnation));
                    }
                    *known = Beat::new(incarnation, beat, now);
                }
                None => {
                    seen.insert(node.clone(), Beat::new(incarnation, beat, now));
                }
            }
        }
        // Removed from Redis (a node that stopped cleanly): forgotten.
        seen.retain(|node, known| {
            let kept = node == &self.me || beats.contains_key(node);
            if !kept && !known.dead {
                gone.push((node.clone(), known.incarnation));
            }
            kept
        });
        for (node, known) in seen.iter_mut() {
            let silent = now.duration_since(known.changed) > self.timeout;
            if silent && !known.dead && node != &self.me {
                known.dead = true;
                gone.push((node.clone(), known.incarnation));
            }
        }
        gone
    }

    /// Another node announced a new incarnation.
    pub fn hello(&self, node: &str, incarnation: u64) {
        let mut seen = self.seen.lock();
        if let Some(known) = seen.get_mut(node)
            && known.incarnation != incarnation
        {
            if !known.dead {
                self.gone.lock().push((node.to_owned(), known.incarnation));
            }
            *known = Beat::new(incarnation, 0, Instant::now());
        }
    }

    /// Whether `node`'s `incarnation` is alive as far as this node knows.
    /// Unknown nodes are not: a record from a node that has no heartbeat is a ghost.
    pub fn alive(&self, node: &str, incarnation: u64) -> bool {
        if node == self.me {
            return incarnation == self.incarnation;
        }
        self.seen
            .lock()
            .get(node)
            .is_some_and(|k| k.incarnation == incarnation && !k.dead)
    }

    /// After an outage of this node's link: every node gets a fresh timeout,
    /// since their heartbeats could not be read meanwhile.
    pub fn forgive(&self) {
        let now = Instant::now();
        for known in self.seen.lock().values_mut() {
            known.changed = now;
        }
    }
}

fn parse_beat(value: &str) -> Option<(u64, u64)> {
    let (incarnation, beat) = value.split_once(' ')?;
    Some((incarnation.parse().ok()?, beat.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beats(entries: &[(&str, &str)]) -> HashMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_node_is_gone_when_its_beat_stops_or_it_comes_back_as_another() {
        let nodes = Nodes::new("a", 1, Duration::from_millis(30));
        assert!(
            nodes
                .observe(&beats(&[("a", "1 1"), ("b", "5 1")]))
                .is_empty()
        );
        assert!(nodes.alive("b", 5));
        assert!(!nodes.alive("b", 4), "another incarnation");
        assert!(!nodes.alive("c", 1), "never seen");

        // b restarts under the same name.
        assert_eq!(
            nodes.observe(&beats(&[("a", "1 2"), ("b", "6 1")])),
            vec![("b".to_string(), 5)]
        );
        assert!(nodes.alive("b", 6));

        // b's beat stands still past the timeout.
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            nodes.observe(&beats(&[("a", "1 3"), ("b", "6 1")])),
            vec![("b".to_string(), 6)]
        );
        assert!(!nodes.alive("b", 6));
        assert!(
            nodes.alive("a", 1),
            "this node is alive whatever Redis says"
        );
    }

    #[test]
    fn a_hello_retires_the_earlier_incarnation_at_once() {
        let nodes = Nodes::new("a", 1, Duration::from_secs(5));
        nodes.observe(&beats(&[("b", "5 1")]));
        nodes.hello("b", 6);
        assert!(nodes.alive("b", 6));
        assert_eq!(
            nodes.observe(&beats(&[("b", "6 1")])),
            vec![("b".to_string(), 5)]
        );
    }
}
