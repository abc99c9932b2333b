"""Signup: write the row and enqueue its welcome job in one transaction.

``POST /signup?fail=1`` enqueues and then fails inside the same ``atomic()`` block: the
signup and the job roll back together, so no email is ever sent for a signup that does
not exist.
"""

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Signup
from accounts.tasks import send_welcome


class SignupFailed(Exception):
    """The failing variant's error, raised after the enqueue and before the commit."""


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@csrf_exempt
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email = json.loads(request.body or b"{}").get("email")
    if not email:
        return JsonResponse({"error": "email is required"}, status=400)
    result = None
    try:
        with transaction.atomic():
            user = Signup.objects.create(email=email)
            result = send_welcome.enqueue(user.id)  # written in this transaction
            if request.GET.get("fail"):
                raise SignupFailed(f"signup of {email} failed after the enqueue")
    except SignupFailed as exc:
        return JsonResponse({"error": str(exc), "job_id": int(result.id)}, status=500)
    return JsonResponse({"signup_id": user.id, "job_id": int(result.id)})


@require_GET
def welcome_status(request: HttpRequest, result_id: str) -> JsonResponse:
    """The welcome job's django.tasks result: status, attempts and return value."""
    result = send_welcome.get_result(result_id)
    body = {"status": result.status, "attempts": result.attempts}
    if result.status == "SUCCESSFUL":
        body["return_value"] = result.return_value
    return JsonResponse(body)
