use adaptsched_sim::synthetic::*;
#[test]
fn stats() {
    for (g, j) in [(64u32, 32usize), (2048, 500), (16384, 4000)] {
        let s = scenario(SyntheticSpec {
            gpus: g,
            jobs: j,
            gpu_types: 4,
            seed: 0,
        })
        .unwrap();
        let running = s.jobs.iter().filter(|x| x.is_running()).count();
        let used: u32 = s.jobs.iter().map(|x| x.allocation.total_gpus()).sum();
        let demand: u32 = s.jobs.iter().map(|x| x.requested_gpus).sum();
        let queued_min = s
            .jobs
            .iter()
            .filter(|x| !x.is_running())
            .map(|x| x.requested_gpus)
            .min();
        let mut hist = std::collections::BTreeMap::new();
        for x in &s.jobs {
            *hist.entry(x.requested_gpus).or_insert(0) += 1;
        }
        println!(
            "{g} {j}: running {running} used {used} demand {demand} queued_min {queued_min:?} hist {hist:?} types {:?}",
            s.cluster.gpus_by_type()
        );
    }
}
