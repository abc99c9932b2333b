"""A signup, and the record that its welcome email went out (at most once per signup)."""

from django.db import models


class Signup(models.Model):
    email = models.EmailField(unique=True)
    created_at = models.DateTimeField(auto_now_add=True)


class WelcomeEmail(models.Model):
    """Written by the welcome job; the one-to-one key makes a second send fail loudly."""

    signup = models.OneToOneField(Signup, on_delete=models.CASCADE, primary_key=True)
    job_id = models.BigIntegerField()
    sent_at = models.DateTimeField(auto_now_add=True)
