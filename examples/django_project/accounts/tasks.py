"""The example's background work, as a standard django.tasks task.

The worker (``manage.py pgtaskq worker``) imports this module by itself: every installed
app's ``tasks`` module is autodiscovered.
"""

try:
    from django.tasks import task
except ImportError:  # Django < 6: the django-tasks backport
    from django_tasks import task

from accounts.models import WelcomeEmail


@task(queue_name="emails", takes_context=True)
def send_welcome(context, signup_id: int) -> str:
    """Pretend to email the user; record the send (with the job that did it)."""
    WelcomeEmail.objects.create(signup_id=signup_id, job_id=int(context.task_result.id))
    return f"welcome sent to signup {signup_id} on attempt {context.attempt}"
