//! An agent's clock against the coordinator's, measured as NTP does: the coordinator notes
//! when it asked (`t0`) and when the answer came (`t3`), the agent when it answered (`at`).
//! The agent's offset is `at - (t0 + t3) / 2`, known to within half the round trip; of a few
//! samples, the one with the shortest round trip is the surest.

/// One request and its reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Coordinator time when the request left.
    pub t0: f64,
    /// Agent time when it answered.
    pub at: f64,
    /// Coordinator time when the reply came.
    pub t3: f64,
}

/// What the samples say about one agent's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// Agent time minus coordinator time, in seconds.
    pub offset: f64,
    /// The round trip of the sample used, in seconds.
    pub rtt: f64,
}

impl Clock {
    /// How far off [`Clock::offset`] may be: half the round trip.
    pub fn uncertainty(&self) -> f64 {
        self.rtt / 2.0
    }

    /// The best estimate from `samples`: the shortest round trip's; `None` without one.
    pub fn estimate(samples: &[Sample]) -> Option<Clock> {
        samples
            .iter()
            .filter(|s| s.t3 >= s.t0 && s.at.is_finite())
            .map(|s| Clock {
                offset: s.at - (s.t0 + s.t3) / 2.0,
                rtt: s.t3 - s.t0,
            })
            .min_by(|a, b| a.rtt.total_cmp(&b.rtt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_round_trip_wins() {
        // An agent 3 s ahead; the second sample's reply was held up on the way back.
        let samples = [
            Sample {
                t0: 100.0,
                at: 103.0005,
                t3: 100.001,
            },
            Sample {
                t0: 101.0,
                at: 104.0005,
                t3: 101.050,
            },
            Sample {
                t0: 102.0,
                at: 105.0002,
                t3: 102.0004,
            },
        ];
        let clock = Clock::estimate(&samples).unwrap();
        assert!((clock.offset - 3.0).abs() < 1e-9, "{clock:?}");
        assert!((clock.rtt - 0.0004).abs() < 1e-9);
        assert!((clock.uncertainty() - 0.0002).abs() < 1e-9);
    }

    #[test]
    fn impossible_samples_are_left_out() {
        assert_eq!(Clock::estimate(&[]), None);
        let backwards = Sample {
            t0: 5.0,
            at: 5.0,
            t3: 4.0,
        };
        let nan = Sample {
            t0: 5.0,
            at: f64::NAN,
            t3: 5.1,
        };
        assert_eq!(Clock::estimate(&[backwards, nan]), None);
    }
}
