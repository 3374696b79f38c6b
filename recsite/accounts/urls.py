from django.urls import include, path

from accounts import views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", views.ThrottledLoginView.as_view(), name="login"),
    path("password_change/", views.ThrottledPasswordChangeView.as_view(), name="password_change"),
    path("password_reset/", views.ThrottledPasswordResetView.as_view(), name="password_reset"),
    path("delete/", views.delete_account, name="delete_account"),
    path("", include("django.contrib.auth.urls")),
]
