"""Job records are kept newest first up to a bound: a canary timer writing a job every pass, or years
of syncs, never grow Redis without limit (real Redis, the test's own prefix)."""

from __future__ import annotations

from sync_support import redis_namespace

from meshgen.records import JobRecord, Records


def test_the_oldest_job_records_are_removed_beyond_the_bound() -> None:
    with redis_namespace("jobs") as rns:
        records = Records(rns.client, rns.prefix, keep_jobs=5)
        ids = []
        for i in range(5 + Records._TRIM_SLACK + 1):
            job = JobRecord(id=f"job-{i:04d}", created_at=1_000_000.0 + i)
            records.save_job(job)
            ids.append(job.id)
        kept = [j.id for j in records.recent_jobs(limit=1000)]
        assert kept == list(reversed(ids[-5:]))
        # The removed records are gone from Redis, not only from the index.
        assert records.get_job(ids[0]) is None and records.get_job(ids[-1]) is not None
        assert len([k for k in rns.client.scan_iter(f"{rns.prefix}job:*")]) == 5
