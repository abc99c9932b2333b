"""The example's own Django tests (``python manage.py test accounts``).

Jobs are written on Django's connection, so in a ``TestCase`` they live in the test's
transaction and vanish with it, like the rows the test writes; ``get_result()`` reads
on the same connection and sees them. ``run_queued_jobs`` runs them there too, without a
worker.
"""

import json

from django.test import TestCase

from accounts.models import WelcomeEmail
from accounts.tasks import send_welcome
from pgtaskq.contrib.django import get_queue
from pgtaskq.inline import run_queued_jobs


class SignupTests(TestCase):
    def post(self, url, email):
        return self.client.post(url, json.dumps({"email": email}),
                                content_type="application/json")

    def test_signup_enqueues_its_welcome_job(self):
        response = self.post("/signup", "a@example.org")
        self.assertEqual(response.status_code, 200)
        result = send_welcome.get_result(str(response.json()["job_id"]))
        self.assertEqual(result.status, "READY")
        self.assertEqual(result.args, [response.json()["signup_id"]])

    def test_failed_signup_leaves_no_job(self):
        response = self.post("/signup?fail=1", "b@example.org")
        self.assertEqual(response.status_code, 500)
        with self.assertRaises(Exception) as caught:
            send_welcome.get_result(str(response.json()["job_id"]))
        self.assertEqual(type(caught.exception).__name__, "TaskResultDoesNotExist")

    def test_the_welcome_job_runs_inline(self):
        response = self.post("/signup", "c@example.org")
        job_id = response.json()["job_id"]
        self.assertEqual(run_queued_jobs(get_queue()), [job_id])
        result = send_welcome.get_result(str(job_id))
        self.assertEqual(result.status, "SUCCESSFUL")
        self.assertEqual(result.return_value,
                         f"welcome sent to signup {response.json()['signup_id']} on attempt 1")
        self.assertEqual(WelcomeEmail.objects.get().job_id, job_id)

    def test_pgtaskqs_own_pool_sees_only_committed_jobs(self):
        # get_job, list_jobs, cancel and retry use pgtaskq's pool, outside the test's
        # transaction (the pool is closed before Django drops the test database).
        self.post("/signup", "d@example.org")
        self.assertEqual(get_queue().list_jobs(), [])
