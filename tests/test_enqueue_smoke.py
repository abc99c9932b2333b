"""Quick end-to-end check that the harness and enqueue work on a real PostgreSQL."""


def test_enqueue_and_get(tq):
    @tq.task
    def add(a, b):
        return a + b

    job_id = add.enqueue(1, 2)
    job = tq.get_job(job_id)
    assert job is not None
    assert (job.status, job.args, job.task) == ("queued", [1, 2], add.name)
