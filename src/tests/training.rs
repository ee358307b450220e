// Training pieces that can be checked inside one transaction (pg_tests are
// rolled back, so a job's worker never sees its job; the job lifecycle is
// tested in tests/pg_regress/sql/training*.sql and tests/integration).

#[pg_test]
fn worker_start_data_round_trips() {
    use crate::postgres::jobs::launch::WorkerStart;
    let start = WorkerStart {
        database: pg_sys::Oid::from(16384),
        login_role: pg_sys::Oid::from(10),
        owner: pg_sys::Oid::from(4_000_000_000),
        creator_xid: u64::MAX,
    };
    assert_eq!(WorkerStart::decode(&start.encode()), Some(start));
    assert!(start.encode().len() <= 127, "bgw_extra holds 127 bytes");
    assert_eq!(WorkerStart::decode("1 2 3"), None);
    assert_eq!(WorkerStart::decode("1 2 x 4"), None);
}
