from django.urls import include, path

from accounts import views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", views.ThrottledLoginView.as_view(), name="login"),
    path("password_change/", views.ThrottledPasswordChangeView.as_view(), name="password_change"),
    path("password_reset/", views.ThrottledPasswordResetView.as_view(), name="password_reset"),
    path("delete/", views.delete_account, name="delete_account"),
    path("email/", views.account_email, name="account_email"),
    path("email/confirm/<str:token>/", views.email_confirm, name="email_confirm"),
    path("", include("django.contrib.auth.urls")),
]
