"""URLs of the example project."""

from accounts import views
from django.urls import path

urlpatterns = [
    path("health", views.health),
    path("signup", views.signup),
    path("welcome/<str:result_id>", views.welcome_status),
]
