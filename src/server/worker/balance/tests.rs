//! The balance's decisions: when one more worker comes into use, when one fewer.

use super::*;

fn at(start: Instant, ms: u64) -> Instant {
    start + Duration::from_millis(ms)
}

use Load::{Idle, Spare, Unsure, WantsHelp};

fn r(load: Load) -> Report {
    Report {
        load,
        busy: None,
        ran: 1.0,
    }
}

fn busy(load: Load, busy: f64) -> Report {
    Report {
        load,
        busy: Some(busy),
        ran: 1.0,
    }
}

/// A worker on a CPU for a share `ran` of the time it was ready to run.
fn waiting(load: Load, busy: f64, ran: f64) -> Report {
    Report {
        load,
        busy: Some(busy),
        ran,
    }
}

#[test]
fn every_worker_in_use_wanting_help_brings_one_more_in() {
    let t0 = Instant::now();
    let plan = Plan::new(t0, 2);
    assert_eq!(plan.decide(&[r(WantsHelp)], 2, at(t0, 10)), Step::Spread);
    assert_eq!(
        plan.decide(&[r(WantsHelp), r(WantsHelp)], 4, at(t0, 10)),
        Step::Spread
    );
    assert_eq!(
        plan.decide(&[r(WantsHelp), r(Unsure)], 4, at(t0, 10)),
        Step::Stay
    );
    assert_eq!(
        plan.decide(&[r(WantsHelp), r(Idle)], 4, at(t0, 10)),
        Step::Stay
    );
    // All of them in use already: nothing to spread to.
    assert_eq!(
        plan.decide(&[r(WantsHelp), r(WantsHelp)], 2, at(t0, 10)),
        Step::Stay
    );
}

#[test]
fn gathering_waits_for_the_hold_and_for_a_spare_worker() {
    let t0 = Instant::now();
    let plan = Plan::new(t0, 2);
    assert_eq!(
        plan.decide(&[r(Spare), r(Spare)], 2, at(t0, 999)),
        Step::Stay
    );
    assert_eq!(
        plan.decide(&[r(Spare), r(Spare)], 2, at(t0, 1000)),
        Step::Gather
    );
    assert_eq!(
        plan.decide(&[r(Spare), r(Idle)], 2, at(t0, 1000)),
        Step::Gather
    );
    // A worker that has just woken says nothing yet; asleep, all of them, neither.
    assert_eq!(
        plan.decide(&[r(Unsure), r(Spare)], 2, at(t0, 5000)),
        Step::Stay
    );
    assert_eq!(
        plan.decide(&[r(Idle), r(Idle)], 2, at(t0, 5000)),
        Step::Stay
    );
    assert_eq!(
        plan.decide(&[r(WantsHelp), r(Spare)], 2, at(t0, 5000)),
        Step::Stay
    );
    assert_eq!(plan.decide(&[r(Spare)], 2, at(t0, 5000)), Step::Stay);
}

#[test]
fn gathering_also_when_the_cpu_used_fits_in_one_worker_fewer() {
    let t0 = Instant::now();
    let plan = Plan::new(t0, 2);
    let later = at(t0, 5000);
    // Two workers sharing 2 cores with one client thread: each waits for a CPU often,
    // so neither reads as spare, but they use 0.89 CPU between them.
    let shared = [busy(Unsure, 0.43), busy(Unsure, 0.46)];
    assert_eq!(plan.decide(&shared, 2, later), Step::Gather);
    assert_eq!(
        plan.decide(&[busy(Unsure, 0.55), busy(Unsure, 0.5)], 2, later),
        Step::Stay
    );
    // A worker not awake long enough to tell keeps things as they are.
    assert_eq!(
        plan.decide(&[busy(Unsure, 0.2), r(Unsure)], 2, later),
        Step::Stay
    );
    assert_eq!(
        plan.decide(&[busy(Unsure, 0.4), r(Idle)], 2, later),
        Step::Gather
    );
    // Not before the hold, and never while one wants help.
    assert_eq!(plan.decide(&shared, 2, at(t0, 10)), Step::Stay);
    let helped = [busy(WantsHelp, 0.3), busy(Unsure, 0.3)];
    assert_eq!(plan.decide(&helped, 2, later), Step::Stay);
}

#[test]
fn the_cpu_one_worker_fewer_could_use_counts_the_other_busy_threads() {
    let t0 = Instant::now();
    let plan = Plan::new(t0, 2);
    let later = at(t0, 5000);
    // Two workers and one busy client thread on 2 CPUs: each worker runs two thirds of the
    // time it is ready to; alone, it would have a CPU of its own.
    let one_client = [waiting(Unsure, 0.45, 0.68), waiting(Unsure, 0.45, 0.7)];
    assert_eq!(plan.decide(&one_client, 2, later), Step::Gather);
    // Two busy client threads: each worker runs half the time it is ready to, and alone
    // would get two thirds of a CPU, less than the two use between them.
    let two_clients = [waiting(Unsure, 0.5, 0.5), waiting(Unsure, 0.5, 0.51)];
    assert_eq!(plan.decide(&two_clients, 2, later), Step::Stay);
    let light = [waiting(Unsure, 0.3, 0.5), waiting(Unsure, 0.3, 0.5)];
    assert_eq!(plan.decide(&light, 2, later), Step::Gather);
    // Spare now and then, each one, but needing their CPU all the same.
    let spare = [waiting(Spare, 0.45, 0.5), waiting(Spare, 0.48, 0.5)];
    assert_eq!(plan.decide(&spare, 2, later), Step::Stay);
    // Four workers on 4 CPUs with four client threads: three workers would get 0.57 each.
    let plan = Plan::new(t0, 4);
    let four = [waiting(Unsure, 0.45, 0.5); 4];
    assert_eq!(plan.decide(&four, 4, later), Step::Stay);
    let four = [waiting(Unsure, 0.4, 0.5); 4];
    assert_eq!(plan.decide(&four, 4, later), Step::Gather);
}

#[test]
fn a_gathering_undone_at_once_doubles_the_hold_up_to_its_cap() {
    let t0 = Instant::now();
    let mut plan = Plan::new(t0, 2);
    let mut now = at(t0, 1000);
    let mut holds = Vec::new();
    for _ in 0..6 {
        plan.note(Step::Gather, now);
        now += Duration::from_millis(100);
        plan.note(Step::Spread, now);
        holds.push(plan.hold.as_secs());
        // The next gathering comes no sooner than the hold.
        let early = now + plan.hold - Duration::from_millis(1);
        assert_eq!(plan.decide(&[r(Spare), r(Spare)], 2, early), Step::Stay);
        now += plan.hold;
        assert_eq!(plan.decide(&[r(Spare), r(Spare)], 2, now), Step::Gather);
    }
    assert_eq!(holds, [2, 4, 8, 16, 16, 16]);
    // A gathering that held for as long as the probe resets the hold.
    plan.note(Step::Gather, now);
    plan.note(Step::Spread, now + PROBE);
    assert_eq!(plan.hold, HOLD_MIN);
}

#[test]
fn new_connections_from_two_workers_cpus_count_as_several_until_forgotten() {
    let balance = Balance::new(2, true);
    // One CPU's connections, however many: one client thread, or one NIC queue.
    assert!((0..10).all(|_| !balance.note_arrival(0)));
    // One from the other worker's CPU: several from now on, whichever comes.
    assert!(balance.note_arrival(1));
    assert!(balance.note_arrival(0));
    // A mix long past is forgotten: after ARRIVALS_REMEMBERED more from one CPU, one.
    let sames = (0..ARRIVALS_REMEMBERED).map(|_| balance.note_arrival(0));
    assert!(!sames.last().unwrap());
}
