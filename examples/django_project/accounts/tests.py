"""The example's own Django tests (``python manage.py test accounts``).

Jobs are written on Django's connection, so in a ``TestCase`` they live in the test's
transaction and vanish with it, like the rows the test writes; ``get_result()`` reads
on the same connection and sees them.
"""

import json

from django.test import TestCase

from accounts.tasks import send_welcome


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
