//! How a fleet's work is split between its agents: exactly, so that the agents together do
//! what one run of the same flags would.

use super::wire::Share;

/// Splits `connections` by `weights` (one per agent, each at least 1): each agent gets its
/// weight's share rounded down, and what rounding leaves goes one each to the first agents.
/// `-n` follows the connections: each agent gets the messages one run would have given its
/// range of connections (the first `messages % connections` connections carry one more).
/// The rate follows the connections too. An agent may get no connection (more agents than
/// connections); the caller refuses that.
pub fn split(
    connections: usize,
    messages: Option<u64>,
    rate: Option<f64>,
    weights: &[u32],
) -> Vec<Share> {
    // One run opens no more connections than it has messages.
    let used = match messages {
        Some(n) => connections.min(usize::try_from(n).unwrap_or(usize::MAX)),
        None => connections,
    };
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|&w| (used as u128 * u128::from(w.max(1)) / u128::from(total.max(1))) as usize)
        .collect();
    let mut left = used - counts.iter().sum::<usize>();
    for c in counts.iter_mut() {
        if left == 0 {
            break;
        }
        *c += 1;
        left -= 1;
    }
    let mut offset = 0;
    counts
        .into_iter()
        .map(|c| {
            let share = Share {
                connections: c,
                messages: messages.map(|n| quota(n, used, offset, c)),
                rate: rate.map(|r| r * c as f64 / used.max(1) as f64),
                conn_offset: offset,
            };
            offset += c;
            share
        })
        .collect()
}

/// The messages one run of `n` over `connections` gives connections `from..from + count`.
fn quota(n: u64, connections: usize, from: usize, count: usize) -> u64 {
    let connections = connections.max(1) as u64;
    let (each, extra) = (n / connections, n % connections);
    let (from, to) = (from as u64, (from + count) as u64);
    let with_extra = extra.clamp(from, to) - from;
    each * count as u64 + with_extra
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_messages_and_rate_add_up_exactly() {
        for (c, n, agents) in [(10, 1001, 3), (64, 7, 3), (3, 3, 3), (1000, 999_999, 7)] {
            let shares = split(c, Some(n), Some(1000.0), &vec![1; agents]);
            let used = c.min(n as usize);
            assert_eq!(shares.iter().map(|s| s.connections).sum::<usize>(), used);
            assert_eq!(shares.iter().map(|s| s.messages.unwrap()).sum::<u64>(), n);
            let rate: f64 = shares.iter().map(|s| s.rate.unwrap()).sum();
            assert!((rate - 1000.0).abs() < 1e-6, "{rate}");
            // Ranges follow each other, so `{conn}` is unique across the fleet.
            let mut next = 0;
            for s in &shares {
                assert_eq!(s.conn_offset, next);
                next += s.connections;
            }
            // Each agent's messages are what one run gives its connections.
            let per_conn = |i: u64| n / used as u64 + u64::from(i < n % used as u64);
            for s in &shares {
                let own: u64 = (s.conn_offset..s.conn_offset + s.connections)
                    .map(|i| per_conn(i as u64))
                    .sum();
                assert_eq!(s.messages, Some(own));
            }
        }
    }

    #[test]
    fn remainders_go_to_the_first_agents_and_weights_count() {
        let shares = split(10, None, None, &[1, 1, 1]);
        let counts: Vec<usize> = shares.iter().map(|s| s.connections).collect();
        assert_eq!(counts, [4, 3, 3]);
        let shares = split(10, None, None, &[3, 1]);
        let counts: Vec<usize> = shares.iter().map(|s| s.connections).collect();
        assert_eq!(counts, [8, 2]);
        let shares = split(2, None, None, &[1, 1, 1]);
        assert_eq!(shares[2].connections, 0);
    }
}
