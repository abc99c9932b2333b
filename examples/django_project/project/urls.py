"""URLs of the example project."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("health", views.health),
    path("signup", views.signup),
    path("welcome/<str:result_id>", views.welcome_status),
]
