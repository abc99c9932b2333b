"""URLs of the example project."""

from accounts import views
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),  # pgtaskq's live and finished jobs, read-only
    path("pgtaskq/", include("pgtaskq.contrib.dashboard.django")),  # staff only
    path("health", views.health),
    path("signup", views.signup),
    path("welcome/<str:result_id>", views.welcome_status),
]
